"""Log summaries: a log's lines collapsed into drain3 templates, so a model sees patterns and counts, not floods.

`summarize_lines` strips each line's leading timestamp, masks the variable parts (ISO timestamps, UUIDs, IPs
with their ports, hex ids, durations, numbers) and mines templates with an in-memory `drain3.TemplateMiner`
(configured in code: no persistence, no `drain3.ini` read from the working directory). Templates come fatal,
then errors, then warnings, then the rest, each group by count, most frequent first. `summarize_log` is the
async entry point: it reads the tail of a service's newest log file (or the file an alert names) through
`FileLogSource.tail`, under the same allowlisted roots and byte bound as log excerpts, and answers with data
(`status` and `error`, as `LogExcerpts` does), never an exception, for a refused, missing or unreadable log.

drain3 logs at INFO for every miner started and every new cluster; its logger is raised to WARNING once, at
import, unless the application already set a level for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from knowledge.log_excerpts import DEFAULT_ERROR_PATTERN, LogTail

log = logging.getLogger(__name__)

_drain3_log = logging.getLogger("drain3")
if _drain3_log.level == logging.NOTSET:
    _drain3_log.setLevel(logging.WARNING)

Status = Literal["ok", "empty", "unconfigured", "error"]

_MAX_EXAMPLE_CHARS = 300
_MAX_TEMPLATE_CHARS = 400

# A mask stands for a whole token or a token's part between non-alphanumerics (`id=42`, `host:8080`).
_BEFORE = r"(?<![A-Za-z0-9])"
_AFTER = r"(?![A-Za-z0-9])"
_ISO_TIMESTAMP = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
_SYSLOG_TIMESTAMP = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} \d{2}:\d{2}:\d{2}"
_EPOCH_TIMESTAMP = r"\d{10}(?:\.\d+)?"
# A leading timestamp, optionally bracketed, and the separators after it.
_LEADING_TIMESTAMP = re.compile(
    rf"^\s*\[?(?:{_ISO_TIMESTAMP}|{_SYSLOG_TIMESTAMP}|{_EPOCH_TIMESTAMP})\]?(?:[\s|,;:-]+|$)"
)
_MASKS: tuple[tuple[str, str], ...] = (
    (_ISO_TIMESTAMP, "TIMESTAMP"),
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "UUID"),
    (r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?", "IP"),
    (r"0[xX][0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}", "HEX"),
    (r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+|\d+(?:\.\d+)? ?(?:sec|secs|seconds|min|mins|minutes)", "DURATION"),
    (r"[-+]?\d+(?:\.\d+)?", "NUM"),
)
_MASKING = tuple(MaskingInstruction(f"{_BEFORE}(?:{pattern}){_AFTER}", name) for pattern, name in _MASKS)

# A level is an upper-case word (`ERROR`, `[WARN]`) or a `level=` field in any case.
_LEVEL_WORD = re.compile(r"(?<![A-Za-z])(FATAL|PANIC|CRITICAL|ERROR|ERR|WARNING|WARN|INFO|DEBUG|TRACE)(?![A-Za-z])")
_LEVEL_FIELD = re.compile(r"\b(?:level|lvl|severity)[\"']?\s*[=:]\s*[\"']?([A-Za-z]+)", re.IGNORECASE)
_LEVEL_NAMES = {
    "FATAL": "FATAL", "PANIC": "FATAL", "CRITICAL": "FATAL", "CRIT": "FATAL",
    "ERROR": "ERROR", "ERR": "ERROR",
    "WARNING": "WARN", "WARN": "WARN",
    "INFO": "INFO", "DEBUG": "DEBUG", "TRACE": "TRACE",
}  # fmt: skip
_SEVERITY = {"FATAL": 0, "ERROR": 1, "WARN": 2, "INFO": 3, "DEBUG": 4, "TRACE": 5}


@dataclass(frozen=True)
class LogTemplate:
    """One pattern of lines: its drain3 template, how many lines it covers and where (1-based, in lines read)."""

    template: str
    count: int
    first_line: int
    last_line: int
    # The first line of the pattern as written (timestamp included), cut to a few hundred characters.
    example: str
    # The most severe level seen on its lines (FATAL, ERROR, WARN, INFO, DEBUG, TRACE), if any said one.
    level: str | None


@dataclass(frozen=True)
class LogSummary:
    """The templates of a log's lines, errors first; or, with a status other than `ok`, why there are none."""

    path: str
    lines_read: int
    templates: list[LogTemplate] = field(default_factory=list)
    # More templates were mined than `templates` holds.
    truncated: bool = False
    total_templates: int = 0
    status: Status = "ok"
    error: str | None = None

    def as_text(self, max_chars: int = 4000) -> str:
        """A compact text for a model: a header, then `count× [level] template (first seen line N)` per line."""
        if self.status != "ok":
            return _cut(f"no log summary ({self.status}){': ' + self.error if self.error else ''}", max_chars)
        header = f"{self.path or 'log'}: {self.lines_read} lines, {self.total_templates} templates"
        if not self.templates:
            return _cut(header, max_chars)
        out = [header]
        used = len(header)
        for shown, item in enumerate(self.templates):
            level = f"[{item.level}] " if item.level else ""
            seen = f"first seen line {item.first_line}" + (
                f", last line {item.last_line}" if item.last_line != item.first_line else ""
            )
            line = f"{item.count}× {level}{_cut(item.template, _MAX_TEMPLATE_CHARS)} ({seen})"
            rest = self.total_templates - shown
            more = f"… {rest} more templates not shown"
            if used + 1 + len(line) + (1 + len(more) if rest > 1 else 0) > max_chars:
                out.append(more)
                break
            out.append(line)
            used += 1 + len(line)
        else:
            if self.truncated:
                out.append(f"… {self.total_templates - len(self.templates)} more templates not shown")
        return _cut("\n".join(out), max_chars)


class LogTailSource(Protocol):
    async def tail(self, service: str, *, log_file: str | None = None, max_lines: int = 2000) -> LogTail: ...


def summarize_lines(
    lines: Sequence[str], *, max_templates: int = 20, similarity: float = 0.4, depth: int = 4, path: str = ""
) -> LogSummary:
    """The templates of `lines` (oldest first), at most `max_templates` of them, errors first then by count."""
    miner = TemplateMiner(config=_config(similarity, depth))
    seen: dict[int, _Cluster] = {}
    for number, line in enumerate(lines, start=1):
        content = _LEADING_TIMESTAMP.sub("", line, count=1).strip()
        if not content:
            continue
        cluster_id = miner.add_log_message(content)["cluster_id"]
        level = _level(content)
        cluster = seen.get(cluster_id)
        if cluster is None:
            seen[cluster_id] = _Cluster(number, number, 1, line.strip()[:_MAX_EXAMPLE_CHARS], level)
        else:
            cluster.last_line, cluster.count = number, cluster.count + 1
            if _severity(level) < _severity(cluster.level):
                cluster.level = level
    templates = [
        LogTemplate(
            template=c.get_template(),
            count=seen[c.cluster_id].count,
            first_line=seen[c.cluster_id].first_line,
            last_line=seen[c.cluster_id].last_line,
            example=seen[c.cluster_id].example,
            level=seen[c.cluster_id].level,
        )
        for c in miner.drain.clusters
        if c.cluster_id in seen
    ]
    templates.sort(key=lambda t: (_rank(t), -t.count, t.first_line))
    kept = max(0, max_templates)
    return LogSummary(
        path=path,
        lines_read=len(lines),
        templates=templates[:kept],
        truncated=len(templates) > kept,
        total_templates=len(templates),
    )


async def summarize_log(
    source: LogTailSource,
    service: str,
    log_file: str | None,
    max_lines: int = 2000,
    max_templates: int = 20,
) -> LogSummary:
    """The summary of the tail of the service's newest log file (or of `log_file`), read under the source's roots.

    Never raises for an expected failure: no roots (`unconfigured`), no file or an empty one (`empty`), a refused
    or unreadable file (`error`) come back as a `LogSummary` with that status and no templates.
    """
    tail = await source.tail(service, log_file=log_file, max_lines=max_lines)
    if tail.status != "ok":
        log.info("no log to summarize", extra={"service": service, "status": tail.status, "error": tail.error})
        return LogSummary(path=tail.path or "", lines_read=len(tail.lines), status=tail.status, error=tail.error)
    summary = await asyncio.to_thread(summarize_lines, tail.lines, max_templates=max_templates, path=tail.path or "")
    context = {"service": service, "path": summary.path, "lines": summary.lines_read}
    log.debug("log summarized", extra={**context, "templates": summary.total_templates})
    return summary


@dataclass
class _Cluster:
    first_line: int
    last_line: int
    count: int
    example: str
    level: str | None


def _config(similarity: float, depth: int) -> TemplateMinerConfig:
    config = TemplateMinerConfig()  # defaults only; `load` (which reads drain3.ini) is never called
    config.drain_sim_th = similarity
    config.drain_depth = depth
    config.masking_instructions = list(_MASKING)
    config.mask_prefix, config.mask_suffix = "<", ">"
    config.profiling_enabled = False
    return config


def _level(content: str) -> str | None:
    found = _LEVEL_FIELD.search(content)
    if found and found.group(1).upper() in _LEVEL_NAMES:
        return _LEVEL_NAMES[found.group(1).upper()]
    found = _LEVEL_WORD.search(content)
    return _LEVEL_NAMES[found.group(1)] if found else None


def _severity(level: str | None) -> int:
    return _SEVERITY.get(level, len(_SEVERITY)) if level else len(_SEVERITY)


def _rank(template: LogTemplate) -> int:
    """0 fatal, 1 errors (by level, or by error words when no level is said), 2 warnings, 3 the rest."""
    if template.level is None:
        return 1 if DEFAULT_ERROR_PATTERN.search(template.template) else 3
    return min(_severity(template.level), 3)


def _cut(text: str, limit: int) -> str:
    limit = max(1, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"
