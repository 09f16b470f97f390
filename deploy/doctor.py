"""`opswarm doctor`: one real round trip through each backing service, run concurrently, each under a timeout.

kafka: produce a unique record to the doctor topic (acks=all) and read it back at its offset.
redis: SET with expiry, GET, DEL of a unique key.  mongo: insert, find and delete a document in opswarm.doctor.
qdrant: create a scratch collection, upsert a point, query it, drop the collection.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError
from qdrant_client import AsyncQdrantClient, models
from redis.exceptions import ConnectionError as RedisConnectionError

from bus.producer import build_producer
from bus.topics import DOCTOR
from deploy.localstack import procfs
from deploy.settings import Settings

COMPONENTS = ("kafka", "redis", "mongo", "qdrant")
_HINT = "is the stack up? run `make up`"
_CONNECT_TIMEOUT_S = 3.0
_VECTOR = [0.1, 0.2, 0.3, 0.4]


@dataclass(frozen=True)
class CheckResult:
    component: str
    state: str  # "ok", or what went wrong: "unreachable", "timeout", "locked", "error"
    reason: str
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class CheckFailed(Exception):
    """A round trip failed in a way we can name; `state` is the short word, the message the human reason."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(reason)
        self.state = state


async def run_doctor(settings: Settings) -> list[CheckResult]:
    """Every check, concurrently; never raises for a failing service, each result says what happened."""
    checks: dict[str, tuple[str, Callable[[], Awaitable[str]]]] = {
        "kafka": (settings.kafka.bootstrap_servers, lambda: _kafka_round_trip(settings)),
        "redis": (_address_of(settings.redis_dsn()), lambda: _redis_round_trip(settings)),
        "mongo": (_address_of(settings.mongo_dsn()), lambda: _mongo_round_trip(settings)),
        "qdrant": (settings.qdrant_url or str(settings.qdrant_dir()), lambda: _qdrant_round_trip(settings)),
    }
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(_timed(name, target, check, settings.doctor_timeout_s))
            for name, (target, check) in checks.items()
        ]
    return [task.result() for task in tasks]


def summary_line(results: list[CheckResult]) -> str:
    """`doctor: kafka=ok redis=unreachable ...`, the last line `opswarm doctor` prints."""
    return "doctor: " + " ".join(f"{r.component}={r.state}" for r in results)


async def _timed(component: str, target: str, check: Callable[[], Awaitable[str]], timeout_s: float) -> CheckResult:
    started = time.perf_counter()

    def result(state: str, reason: str) -> CheckResult:
        return CheckResult(component, state, reason, round((time.perf_counter() - started) * 1000, 1))

    try:
        return result("ok", await asyncio.wait_for(check(), timeout_s))
    except CheckFailed as exc:
        return result(exc.state, str(exc))
    except TimeoutError:
        return result("timeout", f"no complete round trip with {target} within {timeout_s:g}s — {_HINT}")
    except (RedisConnectionError, ServerSelectionTimeoutError, ConnectionFailure, ConnectionError) as exc:
        return result("unreachable", f"cannot reach {target}: {_first_line(exc)} — {_HINT}")
    except Exception as exc:  # noqa: BLE001 - the doctor reports, it does not crash
        return result("error", f"{target}: {type(exc).__name__}: {_first_line(exc)}")


async def _kafka_round_trip(settings: Settings) -> str:
    config = settings.kafka
    await _require_any_listening(config.bootstrap_servers.split(","))
    token = secrets.token_hex(16).encode()
    producer = build_producer(config, client_id="doctor")
    await asyncio.wait_for(producer.start(), config.connect_timeout_s)
    try:
        cluster = await producer.client.fetch_all_metadata()
        topic = config.topic(DOCTOR)
        if topic not in cluster.topics():
            raise CheckFailed("error", f"topic {topic} does not exist — run `opswarm up --topics-only`")
        sent = await producer.send_and_wait(topic, value=token, key=b"doctor")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id_prefix}-doctor",
        enable_auto_commit=False,
        request_timeout_ms=int(config.request_timeout_s * 1000),
    )
    await asyncio.wait_for(consumer.start(), config.connect_timeout_s)
    try:
        partition = TopicPartition(topic, sent.partition)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        while True:  # bounded by the doctor's timeout
            batch = await consumer.getmany(partition, timeout_ms=500)
            for record in batch.get(partition, []):
                if record.offset == sent.offset:
                    if record.value != token:
                        raise CheckFailed("error", f"offset {sent.offset} of {topic} holds another record")
                    return f"produced and consumed offset {sent.offset} of {topic} via {config.bootstrap_servers}"
    finally:
        await consumer.stop()


async def _redis_round_trip(settings: Settings) -> str:
    dsn = settings.redis_dsn()
    await _require_url_listening(dsn, 6379)
    token = secrets.token_hex(16)
    key = f"opswarm:doctor:{token}"
    client = aioredis.from_url(dsn, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_CONNECT_TIMEOUT_S)
    try:
        await client.set(key, token, ex=60)
        value = await client.get(key)
        await client.delete(key)
    finally:
        await client.aclose()
    if value != token.encode():
        raise CheckFailed("error", f"GET {key} returned {value!r}, not what SET wrote")
    return f"SET/GET/DEL of a key with expiry on {_address_of(dsn)}"


async def _mongo_round_trip(settings: Settings) -> str:
    dsn = settings.mongo_dsn()
    await _require_url_listening(dsn, 27017)
    token = secrets.token_hex(16)
    timeout_ms = int(_CONNECT_TIMEOUT_S * 1000)
    client: AsyncMongoClient = AsyncMongoClient(
        dsn, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, appname="opswarm-doctor"
    )
    try:
        collection = client["opswarm"]["doctor"]
        await collection.insert_one({"_id": token, "at": datetime.now(UTC)})
        found = await collection.find_one({"_id": token})
        deleted = await collection.delete_one({"_id": token})
    finally:
        await client.close()
    if found is None or deleted.deleted_count != 1:
        raise CheckFailed("error", f"inserted document {token} was not found again in opswarm.doctor")
    return f"insert/find/delete in opswarm.doctor on {_address_of(dsn)}"


async def _qdrant_round_trip(settings: Settings) -> str:
    if settings.qdrant_url:
        await _require_url_listening(settings.qdrant_url, 6333)
        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        client = AsyncQdrantClient(url=settings.qdrant_url, api_key=api_key, timeout=int(settings.doctor_timeout_s))
        where = settings.qdrant_url
    else:
        client = _open_local_qdrant(settings.qdrant_dir())
        where = f"local path {settings.qdrant_dir()}"
    name = f"opswarm_doctor_{secrets.token_hex(6)}"
    try:
        await client.create_collection(
            name, vectors_config=models.VectorParams(size=len(_VECTOR), distance=models.Distance.COSINE)
        )
        try:
            await client.upsert(name, points=[models.PointStruct(id=1, vector=_VECTOR, payload={"doctor": name})])
            found = await client.query_points(name, query=_VECTOR, limit=1, with_payload=True)
        finally:
            await client.delete_collection(name)
    finally:
        await client.close()
    if not found.points or (found.points[0].payload or {}).get("doctor") != name:
        raise CheckFailed("error", f"the point upserted into {name} was not found by query_points")
    return f"create/upsert/query/delete of a collection in {where}"


def _open_local_qdrant(path: Path) -> AsyncQdrantClient:
    try:
        return AsyncQdrantClient(path=str(path))
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        holders = procfs.lock_holders(path / ".lock")
        who = "; ".join(procfs.describe(pid) for pid in holders) or "another process"
        raise CheckFailed(
            "locked",
            f"{path} is held by {who}; Qdrant's local mode allows one process at a time "
            "(stop that process, or use a Qdrant server via OPSWARM_QDRANT_URL)",
        ) from exc


async def _require_any_listening(addresses: list[str]) -> None:
    """Fails with a precise reason ("connection refused") unless one of `host:port` accepts a TCP connection."""
    first_failure: CheckFailed | None = None
    for address in addresses:
        host, _, port = address.strip().rpartition(":")
        try:
            await _require_listening(host.strip("[]"), int(port))
            return
        except CheckFailed as exc:
            first_failure = first_failure or exc
    if first_failure is not None:
        raise first_failure


async def _require_url_listening(url: str, default_port: int) -> None:
    address = _split_address(url, default_port)
    if address is not None:
        await _require_listening(*address)


async def _require_listening(host: str, port: int) -> None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _CONNECT_TIMEOUT_S)
    except TimeoutError:
        problem = f"no answer within {_CONNECT_TIMEOUT_S:g}s"
    except ConnectionRefusedError:
        problem = "connection refused"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    else:
        writer.close()
        await writer.wait_closed()
        return
    raise CheckFailed("unreachable", f"cannot connect to {host}:{port}: {problem} — {_HINT}")


def _split_address(url: str, default_port: int) -> tuple[str, int] | None:
    """The first host and port of a URL (credentials dropped); None for sockets, SRV records and the like."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "mongodb", "http", "https"):
        return None
    first = parts.netloc.rpartition("@")[2].split(",")[0]
    host, colon, port = first.rpartition(":")
    if not colon or "]" in port:  # no port, or a bare IPv6 address
        host, port = first, ""
    return host.strip("[]"), int(port) if port.isdigit() else default_port


def _address_of(url: str) -> str:
    """A URL's host:port for messages, without credentials."""
    address = _split_address(url, 0)
    return f"{address[0]}:{address[1]}" if address else urlsplit(url).scheme + "://…"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
