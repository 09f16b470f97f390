"""`opswarm kb ingest` and `opswarm kb search` as a user runs them: on the store opened by the CLI itself (no agent),
and through a knowledge agent's HTTP API when one answers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from knowledge.dense_embedders import EmbeddingConfig
from knowledge.knowledge_base import open_knowledge_base
from tests.integration.opswarm_cli import CliResult, run_opswarm
from tests.kb_serving import serving
from tests.services import free_tcp_port

pytestmark = pytest.mark.integration

RUNBOOKS = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "runbooks"
LINE = re.compile(
    r"^kb ingest: documents=(\d+) added=(\d+) updated=(\d+) unchanged=(\d+) removed=(\d+) failed=(\d+) chunks=(\d+)$"
)


def _figures(result: CliResult) -> tuple[int, ...]:
    match = LINE.match(result.last_line)
    assert match, result.describe()
    return tuple(int(n) for n in match.groups())


def _env(tmp_path: Path, backend: str = "hashing") -> dict[str, str]:
    """A store of the test's own; the knowledge URL a closed port, so the CLI opens the store itself."""
    return {
        "OPSWARM_QDRANT_PATH": str(tmp_path / "qdrant"),
        "OPSWARM_QDRANT_URL": "",
        "OPSWARM_KNOWLEDGE_URL": f"http://127.0.0.1:{free_tcp_port()}",
        "OPSWARM_EMBEDDING__BACKEND": backend,
    }


async def test_ingest_is_idempotent_reports_bad_files_and_drops_removed_ones(tmp_path: Path) -> None:
    docs = tmp_path / "runbooks"
    docs.mkdir()
    for name in ("disk-full.md", "high-latency.md", "service-down.md"):
        shutil.copy(RUNBOOKS / name, docs / name)
    (docs / "broken.md").write_text("---\ntype: [not, a, type]\n---\n# Broken\n")
    env = _env(tmp_path)

    first = await run_opswarm("kb", "ingest", str(docs), env=env, timeout_s=180)
    assert first.returncode == 1, first.describe()
    documents, added, updated, unchanged, removed, failed, chunks = _figures(first)
    assert (documents, added, updated, unchanged, removed, failed) == (4, 3, 0, 0, 0, 1) and chunks > 3
    assert "broken.md" in first.stderr and "type" in first.stderr, first.describe()

    (docs / "broken.md").unlink()
    (docs / "service-down.md").unlink()
    latency = docs / "high-latency.md"
    latency.write_text(latency.read_text() + "\n## Notes\n\nA p99 above one second for a minute pages.\n")
    again = await run_opswarm("kb", "ingest", str(docs), env=env, timeout_s=180)
    assert again.returncode == 0, again.describe()
    assert _figures(again)[:6] == (2, 0, 1, 1, 1, 0)

    found = await run_opswarm("kb", "search", "ServiceDown", "--json", "--k", "10", env=env, timeout_s=180)
    assert found.returncode == 0, found.describe()
    assert all(not r["source"].endswith("service-down.md") for r in json.loads(found.stdout))


async def test_search_prints_json_with_the_real_model(tmp_path: Path) -> None:
    env = _env(tmp_path, backend="local")
    ingested = await run_opswarm("kb", "ingest", str(RUNBOOKS), env=env, timeout_s=300)
    assert ingested.returncode == 0, ingested.describe()
    assert _figures(ingested)[:2] == (6, 6)
    result = await run_opswarm(
        "kb", "search", "ConnectionPoolExhausted", "--k", "3", "--type", "runbook", "--json", env=env, timeout_s=300
    )
    assert result.returncode == 0, result.describe()
    results = json.loads(result.stdout)
    assert 1 <= len(results) <= 3
    assert {"source", "title", "section", "type", "score", "snippet"} <= set(results[0])
    assert results[0]["source"] == str(RUNBOOKS / "connection-pool-exhausted.md")
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


async def test_bad_options_get_a_clear_error(tmp_path: Path) -> None:
    env = _env(tmp_path)
    wrong_type = await run_opswarm("kb", "search", "x", "--type", "wiki", env=env)
    assert wrong_type.returncode == 2 and "--type must be one of runbook, postmortem, incident" in wrong_type.stderr
    missing = await run_opswarm("kb", "ingest", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 2 and "nowhere" in missing.stderr, missing.describe()


async def test_the_cli_goes_through_a_knowledge_agent_when_one_answers(tmp_path: Path) -> None:
    client = AsyncQdrantClient(path=str(tmp_path / "agent-qdrant"))
    try:
        kb = await open_knowledge_base(client, EmbeddingConfig(backend="hashing"), local=True)
        async with serving(kb, None, None) as base_url:
            env = {**_env(tmp_path), "OPSWARM_KNOWLEDGE_URL": base_url}
            ingested = await run_opswarm("kb", "ingest", str(RUNBOOKS), env=env, timeout_s=180)
            assert ingested.returncode == 0, ingested.describe()
            found = await run_opswarm("kb", "search", "DiskFull", "--json", env=env, timeout_s=180)
        # The agent's store got them; the CLI's own directory was never made.
        assert set(await kb.store.documents()) == {str(p) for p in RUNBOOKS.glob("*.md")}
        assert not (tmp_path / "qdrant").exists()
    finally:
        await client.close()
    assert found.returncode == 0, found.describe()
    assert json.loads(found.stdout)[0]["source"] == str(RUNBOOKS / "disk-full.md")
