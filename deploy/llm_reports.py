"""`opswarm incidents show ID --llm`: the model conversations coordination stored with an incident, as they went.

Every text here came from a model or from outside (alerts, logs): it is printed as plain text, never as rich
markup, so a `[bold]` or an escape sequence in it is shown, not obeyed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from bus.events import LlmEntry, LlmTranscript
from knowledge.incident_store import IncidentRecord

_STYLES = {
    "system": "dim", "user": "cyan", "assistant": "green", "tool_call": "yellow", "tool_result": "magenta",
    "refused": "bold red", "fallback": "bold red", "cache_hit": "blue",
}  # fmt: skip
_CONTROL = dict.fromkeys([*range(0, 9), 11, 12, *range(14, 32), 127])


def transcripts_of(record: IncidentRecord) -> tuple[list[LlmTranscript], list[str]]:
    """The incident's stored transcripts, and a sentence for each stored one that cannot be read."""
    found, unreadable = [], []
    for number, raw in enumerate(record.facts.get("llm", []), start=1):
        try:
            found.append(LlmTranscript.model_validate(raw))
        except ValidationError as exc:
            unreadable.append(f"transcript {number} cannot be read: {exc.error_count()} error(s)")
    return found, unreadable


def transcript_view(transcript: LlmTranscript, number: int) -> Panel:
    tokens = f"{transcript.prompt_tokens} prompt + {transcript.completion_tokens} completion tokens"
    header = Text(
        f"{transcript.purpose} by {transcript.model}: {transcript.status}"
        f" · {transcript.model_calls} model calls · {transcript.tool_calls} tool calls · {tokens}"
        f" · {transcript.duration_s:.1f} s",
        style="bold",
    )
    parts: list[RenderableType] = [header]
    if transcript.reason:
        parts.append(Text(f"reason: {_plain(transcript.reason)}", style="red"))
    parts += [Text(f"refused: {_plain(refusal)}", style="red") for refusal in transcript.refusals]
    parts += list(_entries(transcript.entries))
    return Panel(Group(*parts), title=f"LLM conversation {number}", title_align="left")


def llm_views(record: IncidentRecord) -> list[RenderableType]:
    transcripts, unreadable = transcripts_of(record)
    if not transcripts and not unreadable:
        return [Text(f"no model was asked about {record.incident_id}", style="dim")]
    views: list[RenderableType] = [transcript_view(t, n) for n, t in enumerate(transcripts, start=1)]
    return views + [Text(sentence, style="red") for sentence in unreadable]


def _entries(entries: list[LlmEntry]) -> Iterator[Text]:
    for entry in entries:
        label = entry.kind if "name" not in entry.data else f"{entry.kind} {entry.data['name']}"
        details = _details(entry)
        line = Text(f"\n[{label}]{details}\n", style=_STYLES.get(entry.kind, ""))
        line.append(_plain(entry.content))
        yield line


def _details(entry: LlmEntry) -> str:
    data: dict[str, Any] = entry.data
    if entry.kind == "assistant" and "prompt_tokens" in data:
        return f" {data['prompt_tokens']}+{data.get('completion_tokens', 0)} tokens, {data.get('duration_s', 0)} s"
    if entry.kind == "tool_result" and data.get("is_error"):
        return " (error)"
    if entry.kind == "cache_hit":
        return f" from {data.get('cached_from')}"
    if entry.kind == "refused" and data.get("refused_actions"):
        return " " + json.dumps(data["refused_actions"])
    return ""


def _plain(text: str) -> str:
    """`text` without terminal control characters (newlines and tabs kept)."""
    return text.translate(_CONTROL)
