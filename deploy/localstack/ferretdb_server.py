"""The local stack's MongoDB: FerretDB with its SQLite backend, built by `make setup` (see deploy/ferretdb)."""

from __future__ import annotations

from pymongo import AsyncMongoClient

from deploy.localstack.component import Component, PortSetting
from deploy.settings import Settings


def ferretdb_component(settings: Settings) -> Component:
    stack = settings.stack
    binary = settings.tools_dir / "bin" / "opswarm-ferretdb"
    home = settings.state_dir / "ferretdb"

    async def prepare() -> None:
        if not binary.is_file():
            raise component.failure(f"FerretDB binary {binary} is missing: run `make setup`")
        home.mkdir(parents=True, exist_ok=True)

    async def probe() -> None:
        client: AsyncMongoClient = AsyncMongoClient(
            host=stack.host, port=stack.mongo_port, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
        )
        try:
            await client.admin.command("ping")
        finally:
            await client.close()

    component = Component(
        name="ferretdb",
        ports=(PortSetting(stack.mongo_port, "OPSWARM_STACK__MONGO_PORT"),),
        argv=[str(binary), "-listen-addr", f"{stack.host}:{stack.mongo_port}", "-sqlite-dir", str(home)],
        data_dir=home,
        log_file=settings.state_dir / "logs" / "ferretdb.log",
        prepare=prepare,
        probe=probe,
    )
    return component
