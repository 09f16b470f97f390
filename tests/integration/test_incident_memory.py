"""The incident memory on a real Qdrant (local mode in a temporary directory): store, search, count, refuse."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient, models

from bus.events import ActionStat, AlertRef, IncidentClosed, PlanStep
from knowledge.incident_memory import EmbedderMismatch, IncidentMemory
from knowledge.text_vectors import HashingEmbedder

pytestmark = pytest.mark.integration


def _closed(
    incident_id: str, kind: str, service: str, hypothesis: str, actions: Sequence[tuple[str, str]], **fields: object
) -> IncidentClosed:
    return IncidentClosed.model_validate(
        {
            "produced_by": "tests", "incident_id": incident_id, "kind": kind, "service": service,
            "title": f"{kind} on {service}", "hypothesis": hypothesis, "outcome": "remediated", "verified": True,
            "alerts": [AlertRef(fingerprint=incident_id, alertname=kind, status="firing", labels={"service": service})],
            "actions": [PlanStep(action=a, target=t) for a, t in actions], **fields,
        }
    )  # fmt: skip


CRASH = _closed(
    "inc-crash", "ServiceDown", "checkout-api", "the process crashed (OOM)", [("restart_service", "checkout-api")]
)
CRASH_AGAIN = _closed(
    "inc-crash-again", "ServiceDown", "cart-api", "the process crashed on start",
    [("restart_service", "cart-api"), ("scale_deployment", "cart-api")], outcome="failed", verified=False,
)  # fmt: skip
UNVERIFIED = _closed(
    "inc-unverified", "ServiceDown", "search-api", "process hung", [("restart_service", "search-api")], verified=False
)
DISK = _closed("inc-disk", "DiskFull", "db-1", "debug logs filled /var/log", [("clear_disk", "/var/log")])


@pytest.fixture
def client(local_qdrant: AsyncQdrantClient) -> AsyncQdrantClient:
    return local_qdrant


@pytest.fixture
async def memory(client: AsyncQdrantClient) -> IncidentMemory:
    memory = IncidentMemory(client, HashingEmbedder(), "incidents", timeout_s=10)
    await memory.ensure_collection()
    for event in (CRASH, CRASH_AGAIN, UNVERIFIED, DISK):
        await memory.store(event)
    return memory


async def test_search_finds_the_most_similar_incident_first(memory: IncidentMemory) -> None:
    hits = await memory.search("ServiceDown on checkout-api: the process crashed", k=3)
    assert [h.doc_id for h in hits][0] == "inc-crash"
    assert len(hits) == 3 and "inc-disk" not in [h.doc_id for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert 0 < hits[-1].score < hits[0].score <= 1.0
    first = hits[0]
    assert (first.type, first.title) == ("incident", "ServiceDown on checkout-api")
    assert first.snippet == "remediated (verified); the process crashed (OOM); actions: restart_service checkout-api"
    assert first.payload["actions"] == [{"action": "restart_service", "target": "checkout-api", "params": {}}]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"kind": "DiskFull"}, ["inc-disk"]),
        ({"outcome": "failed"}, ["inc-crash-again"]),
        ({"action_names": "scale_deployment"}, ["inc-crash-again"]),
        ({"kind": "ServiceDown", "service": "search-api", "type": "incident"}, ["inc-unverified"]),
        ({"type": "runbook"}, []),
    ],
)
async def test_search_filters_on_the_payload(
    memory: IncidentMemory, filters: dict[str, str], expected: list[str]
) -> None:
    hits = await memory.search("process crashed disk logs", k=10, filters=filters)
    assert [h.doc_id for h in hits] == expected


async def test_search_refuses_unknown_filters_and_finds_nothing_for_unknown_words(memory: IncidentMemory) -> None:
    with pytest.raises(ValueError, match="cannot filter incidents on 'team'"):
        await memory.search("crash", filters={"team": "payments"})
    assert await memory.search("??? !!!") == []


async def test_action_statistics_count_attempts_and_verified_successes(memory: IncidentMemory) -> None:
    asked = ["restart_service", "scale_deployment", "clear_disk", "restart_service"]
    stats = await memory.action_stats("ServiceDown", asked)
    assert stats == [
        ActionStat(kind="ServiceDown", action="restart_service", attempts=3, successes=1),
        ActionStat(kind="ServiceDown", action="scale_deployment", attempts=1, successes=0),
        ActionStat(kind="ServiceDown", action="clear_disk", attempts=0, successes=0),
    ]
    assert await memory.action_stats("DiskFull", ["clear_disk"]) == [
        ActionStat(kind="DiskFull", action="clear_disk", attempts=1, successes=1)
    ]


async def test_storing_again_replaces_and_never_double_counts(memory: IncidentMemory) -> None:
    redelivered = CRASH.model_copy(update={"event_id": "another-delivery"})
    await memory.store(redelivered)
    await memory.store(CRASH)
    assert await memory.stored() == 4
    assert await memory.action_stats("ServiceDown", ["restart_service"]) == [
        ActionStat(kind="ServiceDown", action="restart_service", attempts=3, successes=1)
    ]
    # The same incident closed again (verified this time) replaces its earlier record.
    await memory.store(UNVERIFIED.model_copy(update={"verified": True}))
    assert await memory.stored() == 4
    assert (await memory.action_stats("ServiceDown", ["restart_service"]))[0].successes == 2
    assert (await memory.get("inc-unverified") or {})["verified"] is True
    assert await memory.get("inc-never-stored") is None


async def test_reopening_keeps_the_incidents(memory: IncidentMemory, tmp_path: Path, client: AsyncQdrantClient) -> None:
    await client.close()
    reopened_client = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
    try:
        reopened = IncidentMemory(reopened_client, HashingEmbedder(), "incidents")
        await reopened.ensure_collection()
        assert await reopened.stored() == 4
        assert (await reopened.search("checkout-api crashed", k=1))[0].doc_id == "inc-crash"
    finally:
        await reopened_client.close()


class _OtherEmbedder:
    """Same dimension, another model: its vectors must not join the hashing ones."""

    dimension = HashingEmbedder().dimension
    model_id = "some-dense-model"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * (self.dimension - 1) for _ in texts]


@pytest.mark.parametrize("embedder", [HashingEmbedder(256), _OtherEmbedder()], ids=["dimension", "model"])
async def test_a_collection_of_another_embedder_is_refused(
    memory: IncidentMemory, client: AsyncQdrantClient, embedder: HashingEmbedder | _OtherEmbedder
) -> None:
    with pytest.raises(EmbedderMismatch, match="holds vectors of model 'hashing-tf-blake2b-v1', dimension 512"):
        await IncidentMemory(client, embedder, "incidents").ensure_collection()
    assert await memory.stored() == 4  # untouched


async def test_a_collection_made_by_someone_else_is_refused(client: AsyncQdrantClient) -> None:
    await client.create_collection(
        "foreign", vectors_config=models.VectorParams(size=512, distance=models.Distance.COSINE)
    )
    with pytest.raises(EmbedderMismatch, match="holds vectors of model None"):
        await IncidentMemory(client, HashingEmbedder(), "foreign").ensure_collection()
