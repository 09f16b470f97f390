"""`opswarm kb ingest PATH...` and `opswarm kb search TEXT`: the knowledge base from the command line.

Both talk to the running knowledge agent's HTTP API (knowledge/kb_api.py) when it answers, since it owns the
store (a local Qdrant directory admits one process at a time); when no agent answers, they open the store
themselves, with the same settings the agents get.

`ingest` reads the Markdown files (directories: every *.md / *.markdown below), sends them in batches with a
progress bar, then removes the documents once ingested from those directories whose files are gone; the last line
is `kb ingest: documents=N added=N updated=N unchanged=N removed=N failed=N chunks=N` (exit 1 if any failed).
`search` prints a table, or with `--json` a JSON array of results, best first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import httpx
import typer
from qdrant_client import AsyncQdrantClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deploy.agents_cli import HTTP_PORTS
from deploy.settings import Settings
from knowledge.document_store import SEARCH_MODES, SearchMode
from knowledge.kb_api import DocumentIn, DocumentResultOut, SearchResult, ingest_texts, search_filters
from knowledge.knowledge_base import DocumentResult, IngestReport, KnowledgeBase, open_knowledge_base
from knowledge.markdown_documents import DOC_TYPES, DocumentError, find_documents

kb_app = typer.Typer(help="The knowledge base: ingest runbooks and postmortems, search them.", no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
_HTTP_TIMEOUT_S = 120.0
_PROBE_TIMEOUT_S = 2.0
BATCH = 20


class KnowledgeBaseAccess(Protocol):
    async def ingest(self, documents: list[DocumentIn]) -> list[DocumentResultOut]: ...
    async def prune(self, roots: list[str], keep: list[str]) -> list[str]: ...
    async def search(self, query: str, k: int, mode: SearchMode, filters: dict[str, str]) -> list[SearchResult]: ...


class AgentAccess:
    """Through the knowledge agent's HTTP API."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def ingest(self, documents: list[DocumentIn]) -> list[DocumentResultOut]:
        body = {"documents": [d.model_dump() for d in documents]}
        answer = await self._request("POST", "/kb/documents", json=body)
        return [DocumentResultOut(**r) for r in answer["results"]]

    async def prune(self, roots: list[str], keep: list[str]) -> list[str]:
        return list((await self._request("POST", "/kb/prune", json={"roots": roots, "keep": keep}))["removed"])

    async def search(self, query: str, k: int, mode: SearchMode, filters: dict[str, str]) -> list[SearchResult]:
        answer = await self._request("GET", "/kb/search", params={"q": query, "k": k, "mode": mode, **filters})
        return [SearchResult(**r) for r in answer["results"]]

    async def _request(self, method: str, path: str, **kwargs: object) -> dict:
        response = await self._client.request(method, path, **kwargs)  # type: ignore[arg-type]
        if response.status_code >= 400:
            raise typer.BadParameter(f"the knowledge agent answered {response.status_code}: {response.text}")
        return response.json()


class LocalAccess:
    """The store opened in this process (no agent running)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self._kb = kb

    async def ingest(self, documents: list[DocumentIn]) -> list[DocumentResultOut]:
        report = await ingest_texts(self._kb, documents)
        return [DocumentResultOut(**vars(r)) for r in report.results]

    async def prune(self, roots: list[str], keep: list[str]) -> list[str]:
        return await self._kb.prune(roots, set(keep))

    async def search(self, query: str, k: int, mode: SearchMode, filters: dict[str, str]) -> list[SearchResult]:
        return [SearchResult.of(h) for h in await self._kb.search(query, k, mode=mode, filters=filters)]


def knowledge_url(settings: Settings) -> str:
    return settings.knowledge_url or f"http://{settings.stack.host}:{HTTP_PORTS['knowledge']}"


@asynccontextmanager
async def knowledge_access(settings: Settings) -> AsyncIterator[KnowledgeBaseAccess]:
    """The running agent's API if it answers, else the store opened here."""
    async with httpx.AsyncClient(base_url=knowledge_url(settings), timeout=_HTTP_TIMEOUT_S) as client:
        try:
            probe = await client.get("/kb/documents", timeout=_PROBE_TIMEOUT_S)
        except httpx.TransportError:
            probe = None
        if probe is not None and probe.status_code == 200:
            yield AgentAccess(client)
            return
    qdrant = (
        AsyncQdrantClient(url=settings.qdrant_url, api_key=_secret(settings.qdrant_api_key))
        if settings.qdrant_url
        else AsyncQdrantClient(path=str(settings.qdrant_dir() / "knowledge"))
    )
    try:
        yield LocalAccess(await open_knowledge_base(qdrant, settings.embedding, local=not settings.qdrant_url))
    finally:
        await qdrant.close()


@kb_app.command("ingest")
def ingest(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Markdown files or directories of them."),
) -> None:
    """Store runbooks and postmortems (front matter understood); unchanged ones are skipped, removed ones dropped."""
    settings = _settings(ctx)
    try:
        files = find_documents(paths)
    except DocumentError as exc:
        raise typer.BadParameter(str(exc)) from exc
    roots = [str(p.resolve()) for p in paths if p.is_dir()]
    report = asyncio.run(_ingest(settings, files, roots))
    failed = [r for r in report.results if r.outcome == "failed"]
    for result in failed:  # one line each, whole: a path cut to a table's width helps nobody
        typer.echo(f"not ingested: {result.source}: {result.error}", err=True)
    typer.echo(report.line())
    if failed:
        raise typer.Exit(1)


async def _ingest(settings: Settings, files: Sequence[Path], roots: list[str]) -> IngestReport:
    report = IngestReport()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    async with knowledge_access(settings) as access:
        with Progress(*columns, console=err_console, transient=False) as progress:
            task = progress.add_task("ingesting", total=len(files))
            for start in range(0, len(files), BATCH):
                batch, unreadable = _read_batch(files[start : start + BATCH])
                report.results.extend(unreadable)
                if batch:
                    results = await access.ingest(batch)
                    report.results.extend(DocumentResult(r.source, r.outcome, r.chunks, r.error) for r in results)
                progress.advance(task, len(files[start : start + BATCH]))
        if roots:
            report.removed.extend(await access.prune(roots, [str(f) for f in files]))
    return report


def _read_batch(files: Sequence[Path]) -> tuple[list[DocumentIn], list[DocumentResult]]:
    documents, unreadable = [], []
    for path in files:
        try:
            documents.append(DocumentIn(source=str(path), text=path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            unreadable.append(DocumentResult(str(path), "failed", error=f"cannot read: {exc}"))
    return documents, unreadable


@kb_app.command("search")
def search(
    ctx: typer.Context,
    text: str = typer.Argument(..., help="What to look for: an alert name, a symptom, a question."),
    k: int = typer.Option(5, "--k", min=1, max=100, help="How many results."),
    type_: str | None = typer.Option(None, "--type", help=f"Only this type: {', '.join(DOC_TYPES)}."),
    service: str | None = typer.Option(None, "--service", help="Only documents about this service."),
    mode: str = typer.Option("hybrid", "--mode", help=f"Ranking: {', '.join(SEARCH_MODES)}."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, best first."),
) -> None:
    """Search the knowledge base: hybrid (dense + lexical, fused) by default."""
    settings = _settings(ctx)
    if type_ is not None and type_ not in DOC_TYPES:
        raise typer.BadParameter(f"--type must be one of {', '.join(DOC_TYPES)}, not {type_!r}")
    if mode not in SEARCH_MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(SEARCH_MODES)}, not {mode!r}")
    filters = search_filters(type_, service)  # type: ignore[arg-type]
    results = asyncio.run(_search(settings, text, k, mode, filters))  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps([r.model_dump() for r in results], indent=2))
        return
    table = Table("score", "type", "title", "section", "source", "snippet", title=f"{len(results)} result(s)")
    for r in results:
        table.add_row(f"{r.score:.3f}", r.type, r.title, r.section, r.source, r.snippet)
    console.print(table)


async def _search(settings: Settings, text: str, k: int, mode: SearchMode, filters: dict[str, str]) -> list:
    async with knowledge_access(settings) as access:
        return await access.search(text, k, mode, filters)


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None, "deploy.cli.main passes the Settings as the context object"
    return settings


def _secret(value: object) -> str | None:
    return None if value is None else value.get_secret_value()  # type: ignore[attr-defined]
