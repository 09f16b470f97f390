"""`opswarm bridge`: the alert bridge in the foreground, on the CLI's Kafka (Ctrl-C or SIGTERM stops it)."""

from __future__ import annotations

import typer

from bus.bridge.server import CannotListen, run_bridge_on_uvloop
from bus.bridge.settings import BridgeSettings
from deploy.settings import Settings


def bridge(ctx: typer.Context) -> None:
    """Run the alert bridge in the foreground: Alertmanager webhooks and JSON alerts in, AlertReceived on Kafka out."""
    settings = ctx.find_object(Settings)
    assert settings is not None, "deploy.cli.main passes the Settings as the context object"
    bridge_settings = BridgeSettings(kafka=settings.kafka, bridge=settings.bridge, log_level=settings.log_level)
    try:
        run_bridge_on_uvloop(bridge_settings, announce=lambda url: typer.echo(f"bridge listening on {url}"))
    except CannotListen as exc:
        typer.echo(f"bridge: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("bridge stopped")
