"""The local stack's alert bridge: `python -m bus.bridge` of this checkout, Alertmanager's webhook receiver.

It takes Alertmanager's `POST /alertmanager` (bearer token of `<state_dir>/bridge/token`, see bridge_token.py)
and publishes AlertReceived on the stack's Kafka, in the configured topic namespace. It follows the settings: an
`opswarm up` with another topic namespace (or Kafka address, port, token) restarts it with them, which is how a
swarm in a namespace of its own (the e2e tests') gets Alertmanager's alerts; Alertmanager retries meanwhile. It is started once Kafka
answers, and stopped before Kafka (stack.py orders them), so that it can flush what it holds. Ready when
`GET /readyz` answers 2xx; Prometheus scrapes its `/metrics` (job `opswarm-bridge`).
"""

from __future__ import annotations

from deploy.localstack.bridge_token import ensure_token, read_token
from deploy.localstack.component import Component, PortSetting, http_ready_probe
from deploy.localstack.processes import this_python
from deploy.settings import Settings


def bridge_component(settings: Settings) -> Component:
    bridge = settings.bridge
    home = settings.state_dir / "bridge"

    async def prepare() -> None:
        ensure_token(settings)

    def env() -> dict[str, str]:
        return {
            "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "OPSWARM_KAFKA__TOPIC_NAMESPACE": settings.kafka.topic_namespace,
            "OPSWARM_BRIDGE__HOST": bridge.host,
            "OPSWARM_BRIDGE__PORT": str(bridge.port),
            "OPSWARM_BRIDGE__TOKEN": read_token(settings.state_dir),
        }

    return Component(
        name="bridge",
        ports=(PortSetting(bridge.port, "OPSWARM_BRIDGE__PORT"),),
        argv=[this_python(), "-m", "bus.bridge"],
        data_dir=home,
        log_file=settings.state_dir / "logs" / "bridge.log",
        prepare=prepare,
        probe=http_ready_probe(f"{settings.bridge_url()}/readyz"),
        env=env,
        after=("kafka",),
        restart_on_env_change=True,
    )
