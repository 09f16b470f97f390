"""The first draft of a postmortem when an incident closes: the model's when there is one, a template's otherwise.

The draft is a Markdown document of type `postmortem`, source `postmortem-drafts/<incident_id>.md`, for the
knowledge base. Its front matter is always written here (title, type, ids, alerts, services, outcome, `draft:
true`, `method` and, when a model was asked, `llm`: model, status, reason, tokens), never taken from the model,
and so is its `# title` line. With a model, the model writes the body sections from the incident's facts, all of
them fenced as untrusted data (knowledge/untrusted_text.py): one request under `max_wall_s`. Any failure (an HTTP
error, a malformed body, the timeout, a reply without sections or too long or cut at the token limit) falls back
to the template, and the transcript says why (status `fallback`, `reason`).

The template says only what the record holds: the swarm's hypothesis as a hypothesis, the actions with their
targets, the outcome; lessons and follow-ups are left for a human, marked so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal

import yaml
from autogen_core.models import ChatCompletionClient, SystemMessage, UserMessage

from bus.events import IncidentClosed, LlmEntry, LlmTranscript
from knowledge.incident_store import IncidentRecord
from knowledge.knowledge_base import KnowledgeBase
from knowledge.llm_client import LlmConfig, usage_of
from knowledge.markdown_documents import SourceDocument, parse_document
from knowledge.untrusted_text import FENCE_RULE, fence, new_nonce

log = logging.getLogger(__name__)

SOURCE_PREFIX = "postmortem-drafts/"
PURPOSE = "postmortem"
MAX_REPLY_CHARS = 20_000
TO_COMPLETE = "_To be completed by a human._"
# The newest timeline entries a draft shows (a long incident keeps its last ones).
TIMELINE_ENTRIES = 60
SECTIONS = ("Summary", "Impact and timeline", "Root cause", "What was done", "Outcome and verification",
            "Lessons and follow-ups")  # fmt: skip
_OUTCOMES = {
    "remediated": "The swarm remediated the incident.",
    "escalated": "The swarm escalated the incident to a human.",
    "resolved_itself": "The incident resolved itself before any action.",
    "failed": "The swarm's remediation failed.",
    "denied": "A human denied the proposed remediation.",
}
# What a draft's front matter keeps of the transcript (the prompts and the reply: the DEBUG log, not there).
_TRANSCRIPT_SUMMARY = frozenset(
    {"purpose", "model", "status", "reason", "prompt_tokens", "completion_tokens", "model_calls", "duration_s"}
)
_HEADING = re.compile(r"^## \S", re.MULTILINE)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_WRAPPING_FENCE = re.compile(r"\A```[A-Za-z]*[ \t]*\n(.*)\n```[ \t]*\Z", re.DOTALL)
_TITLE_LINE = re.compile(r"\A#[ \t][^\n]*(?:\n|\Z)")

SYSTEM_PROMPT = (
    "You write the first draft of a blameless postmortem for an incident that an automated operations swarm "
    "handled. A human engineer reviews and completes the draft.\n"
    f"{FENCE_RULE}\n"
    "Write Markdown only: the body's sections, each under a level-2 heading, in this order: "
    + ", ".join(f"'## {name}'" for name in SECTIONS)
    + ". No front matter and no level-1 title. Say only what the facts say; call the root cause the swarm's "
    "hypothesis unless the facts show it was verified; never invent times, numbers, owners or customer impact. "
    f"Under '## Lessons and follow-ups' list questions for the reviewer, each marked '{TO_COMPLETE}'. "
    "Stay under 500 words."
)


@dataclass(frozen=True)
class PostmortemDraft:
    """A draft's Markdown (front matter included), how it was written, and the model's transcript (None: no model)."""

    incident_id: str
    markdown: str
    method: Literal["llm", "template"]
    transcript: LlmTranscript | None = None

    @property
    def source(self) -> str:
        return draft_source(self.incident_id)

    def document(self) -> SourceDocument:
        return parse_document(self.source, self.markdown)


def draft_source(incident_id: str) -> str:
    return f"{SOURCE_PREFIX}{incident_id}.md"


def is_draft(source: str) -> bool:
    """Whether a knowledge base document is a postmortem draft (by its source)."""
    return source.startswith(SOURCE_PREFIX)


async def draft_stored(kb: KnowledgeBase, incident_id: str) -> bool:
    """Whether the knowledge base holds a draft of this incident already (a lookup by id, not a scan)."""
    source = draft_source(incident_id)
    return source in await kb.store.content_hashes([source])


def template_postmortem(event: IncidentClosed, record: IncidentRecord | None) -> str:
    """The draft from the facts alone (front matter included)."""
    return _document(event, _template_body(event, record), "template", None)


async def draft_postmortem(
    event: IncidentClosed, record: IncidentRecord | None, model_client: ChatCompletionClient | None, config: LlmConfig
) -> PostmortemDraft:
    """The model's draft when there is a client and its reply is usable; the template's otherwise."""
    incident_id = _incident_id(event)
    if model_client is None:
        return PostmortemDraft(incident_id, template_postmortem(event, record), "template")
    system, user = SYSTEM_PROMPT, _facts_prompt(event, record)
    entries = [LlmEntry(kind="system", content=system), LlmEntry(kind="user", content=user)]
    tokens, calls, reason = (0, 0), 0, ""
    body: str | None = None
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.max_wall_s):
            calls = 1
            result = await model_client.create([SystemMessage(content=system), UserMessage(content=user, source="ops")])
        tokens = usage_of(result)
        content = result.content if isinstance(result.content, str) else json.dumps([c.name for c in result.content])
        usage = {"prompt_tokens": tokens[0], "completion_tokens": tokens[1], "finish_reason": result.finish_reason}
        entries.append(LlmEntry(kind="assistant", content=content[:MAX_REPLY_CHARS], data=usage))
        body, reason = _usable_body(result.content, result.finish_reason)
    except TimeoutError:
        reason = f"no reply within {config.max_wall_s}s"
    except Exception as exc:  # noqa: BLE001 - any failure of the model falls back to the template
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if body is None:
        entries.append(LlmEntry(kind="fallback", content=reason))
    transcript = LlmTranscript(
        purpose=PURPOSE, model=config.model, status="accepted" if body is not None else "fallback", reason=reason,
        prompt_tokens=tokens[0], completion_tokens=tokens[1], model_calls=calls,
        duration_s=round(time.monotonic() - started, 3), entries=entries,
    )  # fmt: skip
    log.debug("postmortem transcript", extra={"incident_id": incident_id,
                                              "transcript": transcript.model_dump(mode="json")})  # fmt: skip
    if body is None:
        log.warning("postmortem draft falls back to the template",
                    extra={"incident_id": incident_id, "reason": reason, "model": config.model})  # fmt: skip
        markdown = _document(event, _template_body(event, record), "template", transcript)
        return PostmortemDraft(incident_id, markdown, "template", transcript)
    log.info("postmortem drafted by the model", extra={"incident_id": incident_id, "model": config.model,
             "prompt_tokens": tokens[0], "completion_tokens": tokens[1]})  # fmt: skip
    return PostmortemDraft(incident_id, _document(event, body, "llm", transcript), "llm", transcript)


def _usable_body(content: Any, finish_reason: str) -> tuple[str | None, str]:
    """(the reply's body sections, "") when the reply is usable; (None, why not) otherwise."""
    if not isinstance(content, str):
        return None, "reply rejected: tool calls instead of text"
    if finish_reason == "length":
        return None, "reply rejected: cut at the token limit"
    text = content.strip().replace("\r\n", "\n")
    wrapped = _WRAPPING_FENCE.match(text)
    if wrapped:
        text = wrapped.group(1).strip()
    # Front matter and the title are ours: whatever the model wrote of them goes.
    text = _TITLE_LINE.sub("", _FRONT_MATTER.sub("", text, count=1).lstrip(), count=1).strip()
    if not text:
        return None, "reply rejected: empty"
    if len(text) > MAX_REPLY_CHARS:
        return None, f"reply rejected: {len(text)} characters, more than {MAX_REPLY_CHARS}"
    if not _HEADING.search(text):
        return None, "reply rejected: no '## ' section"
    return text, ""


def _facts_prompt(event: IncidentClosed, record: IncidentRecord | None) -> str:
    nonce = new_nonce()
    facts = {
        "incident_id": event.incident_id, "title": event.title, "service": event.service, "kind": event.kind,
        "severity": event.severity, "outcome": event.outcome, "verified": event.verified,
        "durations_s": event.durations_s, "closed_at": event.occurred_at.isoformat(),
        "actions": [{"action": s.action, "target": s.target, "params": s.params} for s in event.actions],
        "alerts": [{"alertname": a.alertname, "status": a.status, "labels": a.labels} for a in event.alerts],
    }  # fmt: skip
    parts = [
        "Draft the postmortem of this closed incident from the facts below.",
        fence("incident", json.dumps(facts, indent=1, default=str), nonce, max_chars=6000),
        fence("swarm_hypothesis", event.hypothesis or "(none recorded)", nonce),
        fence("closing_summary", event.summary or "(none)", nonce),
    ]
    if record is not None:
        parts.append(fence("timeline", "\n".join(_timeline_lines(record)) or "(empty)", nonce, max_chars=8000))
    return "\n\n".join(parts)


def _document(
    event: IncidentClosed, body: str, method: Literal["llm", "template"], transcript: LlmTranscript | None
) -> str:
    title = f"Postmortem draft: {_one_line(event.title)}"
    front: dict[str, Any] = {
        "title": title, "type": "postmortem", "alerts": sorted({a.alertname for a in event.alerts}),
        "services": [event.service], "severity": event.severity, "incident_id": event.incident_id,
        "kind": event.kind, "outcome": event.outcome, "verified": event.verified,
        "closed_at": event.occurred_at.isoformat(), "draft": True, "method": method,
    }  # fmt: skip
    if transcript is not None:
        front["llm"] = transcript.model_dump(mode="json", include=_TRANSCRIPT_SUMMARY)
    if method == "llm":
        assert transcript is not None
        origin = f"by the model {transcript.model} from the incident's facts"
    else:
        origin = "from the template" + (f" (the model failed: {transcript.reason})" if transcript is not None else "")
    note = (f"> Draft written {origin} when the incident closed; not reviewed. A human checks it and completes "
            "the parts marked to be completed.")  # fmt: skip
    return f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n# {title}\n\n{note}\n\n{body.strip()}\n"


def _template_body(event: IncidentClosed, record: IncidentRecord | None) -> str:
    verified = "verified" if event.verified else "not verified"
    lines = ["## Summary", "", f"Incident: {_one_line(event.title)}.", "",
             f"- Service: {_one_line(event.service)}", f"- Severity: {event.severity or 'unknown'}",
             f"- Kind: {_one_line(event.kind or 'unknown')}", f"- Outcome: {event.outcome} ({verified})"]  # fmt: skip
    if event.alerts:
        lines.append("- Alerts: " + ", ".join(sorted({_one_line(a.alertname) for a in event.alerts})))
    if event.summary:
        lines += ["", "The swarm's closing summary:", "", *_quoted(event.summary)]
    lines += ["", "## Impact and timeline", ""]
    timeline = _timeline_lines(record) if record is not None else []
    lines += [f"- {line}" for line in timeline]
    if event.durations_s:
        lines += ["", "Durations:", ""] if timeline else []
        lines += [f"- {_one_line(phase)}: {seconds:g} s" for phase, seconds in event.durations_s.items()]
    if not timeline and not event.durations_s:
        lines.append("No timeline was recorded.")
    lines += ["", f"Impact on users: {TO_COMPLETE}", "", "## Root cause", ""]
    if event.hypothesis:
        lines += ["The swarm's hypothesis (not confirmed by a human):", "", *_quoted(event.hypothesis)]
    else:
        lines.append("The swarm recorded no hypothesis.")
    lines += ["", f"Confirmed root cause: {TO_COMPLETE}", "", "## What was done", ""]
    if event.actions:
        lines += [f"- `{_one_line(s.action)}` on `{_one_line(s.target)}`"
                  + (f" with {_one_line(json.dumps(s.params, sort_keys=True, default=str))}" if s.params else "")
                  for s in event.actions]  # fmt: skip
    else:
        lines.append("The swarm took no action.")
    lines += ["", "## Outcome and verification", "", _OUTCOMES.get(event.outcome, event.outcome),
              "The fix was verified by the swarm's check." if event.verified else "No check verified a fix."]
    lines += ["", "## Lessons and follow-ups", "", TO_COMPLETE, "",
              f"- What went well: {TO_COMPLETE}", f"- What went wrong: {TO_COMPLETE}",
              f"- Follow-up actions (owner, due date): {TO_COMPLETE}"]  # fmt: skip
    return "\n".join(lines)


def _timeline_lines(record: IncidentRecord) -> list[str]:
    return [f"{entry.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC {_one_line(entry.kind)} ({_one_line(entry.actor)}): "
            f"{_one_line(entry.summary)}" for entry in record.timeline[-TIMELINE_ENTRIES:]]  # fmt: skip


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _quoted(text: str) -> list[str]:
    """Free text as a block quote: its lines can open no heading or section of their own."""
    return [f"> {line}".rstrip() for line in text.strip().splitlines()]


def _incident_id(event: IncidentClosed) -> str:
    if event.incident_id is None:
        raise ValueError("an incident.closed event without incident_id has no postmortem draft")
    return event.incident_id
