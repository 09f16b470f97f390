"""Markdown runbooks and postmortems for the knowledge base: YAML front matter, title, type, alert names, services.

A document may open with a front matter block: `---` on its first line, up to the next line that is exactly `---`
or `...`, holding a YAML mapping (read with `yaml.safe_load`). Fields the parser reads (any others are kept in
`metadata`): `title`, `type` (one of DOC_TYPES), `alerts` or `alertnames`, `services` or `service`, `severity`.
A list field may also be a single string; a single string is split on commas and whitespace
(`alerts: ServiceDown, TargetDown`), which no alert or service name contains.

Title: the front matter's `title`, else the first level-1 ATX heading (`# ...`, outside fenced code), else the
file stem humanised (`high-error-rate` -> "High error rate"). Type: the front matter's `type`, else "postmortem"
when a directory of the path is named `postmortems`/`postmortem` or the stem contains "postmortem" (case
ignored), else "runbook".

Alert names: the front matter's `alerts`/`alertnames` when it declares any (what the document answers), else
those found in the body: an identifier `[A-Z][A-Za-z0-9]*` with at least two
capitalised parts and a lower-case letter (`HighErrorRate`, `KubePodCrashLooping`, `ServiceDown`, `KubeAPIDown`;
not `Watchdog`, `HTTP`, `CPU`) counts only where the text marks it as an alert:

- it is the value of `alertname`/`alert`/`alerts` (`alertname="DiskFull"`, `alertname=~"DiskFull|DiskUsageHigh"`,
  `- alert: DiskFull` in a rule file), anywhere, fenced code included; negative matchers (`alertname!="X"`) do
  not count;
- it is right after or right before the word "alert"/"alerts"/"alertname" in prose ("alert DiskFull", "the
  DiskFull alert", "the `DiskFull` alert"), outside fenced code;
- it is inside an inline code span (`` `HighErrorRate` ``) or in a heading (`## ServiceDown`), outside fenced code.

Fenced code blocks are code, not mentions: apart from the `alertname=` form, CamelCase in them never counts
(class names, Kubernetes kinds). CamelCase in plain prose never counts either ("PagerDuty", "JavaScript",
"PostgreSQL"), and a short list of product names (`_NOT_ALERTS`) never counts in any form, so "a PagerDuty
alert" or "## Escalate via PagerDuty" add nothing. The front matter's names are taken as they are.

Services found in the body: `service="x"`, `service='x'`, `service=x` and `service=~"x|y"` label matchers whose
values are plain names (`[A-Za-z0-9][A-Za-z0-9_.-]*`), so templates such as `service="{service}"` or
`service="<service>"` add nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal, cast, get_args

import yaml

log = logging.getLogger(__name__)

DocType = Literal["runbook", "postmortem", "incident"]
DOC_TYPES: tuple[DocType, ...] = get_args(DocType)

MARKDOWN_SUFFIXES = (".md", ".markdown")
_POSTMORTEM_DIRS = frozenset({"postmortems", "postmortem"})
_FRONT_MATTER_OPEN = "---"
_FRONT_MATTER_CLOSE = ("---", "...")

# CamelCase products and tools that prose puts next to the word "alert" or in headings; never alert names.
_NOT_ALERTS = frozenset(
    {
        "PagerDuty", "OpsGenie", "VictorOps", "StatusPage", "GitHub", "GitLab", "BitBucket", "JavaScript",
        "TypeScript", "PostgreSQL", "MySQL", "MariaDB", "MongoDB", "FerretDB", "CockroachDB", "DynamoDB",
        "RabbitMQ", "ActiveMQ", "ZooKeeper", "OpenSearch", "ElasticSearch", "CloudWatch", "CloudFront",
        "DataDog", "NewRelic", "AlertManager", "SendGrid", "PowerShell", "MacOS", "YouTube", "LinkedIn",
        "WhatsApp", "OpenAI", "OpenTelemetry", "OpenShift", "FastAPI", "VMware", "SQLite", "InfluxDB",
    }
)  # fmt: skip

_IDENTIFIER_CHARS = "A-Za-z0-9_"
# A candidate: a capitalised identifier not glued to other identifier characters.
_CANDIDATE = re.compile(rf"(?<![{_IDENTIFIER_CHARS}])[A-Z][A-Za-z0-9]*(?![{_IDENTIFIER_CHARS}])")
# The capitalised parts of an identifier: "KubeAPIDown" -> Kube, API, Down.
_CAPITAL_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z][a-z0-9]*")
_NAME = r"[A-Z][A-Za-z0-9]*"
# The word alert/alerts/alertname, in any case (the names themselves are case-sensitive).
_KEYWORD = r"(?<![A-Za-z0-9_])(?i:alertname|alerts?)(?![A-Za-z0-9_])"
# alertname="X", alertname=~"X|Y", alert: X, alertname = 'X' (not !=, !~).
_ASSIGNED = re.compile(rf"{_KEYWORD}[ \t]*(?:=~|=|:)[ \t]*(?:\"([^\"\n]*)\"|'([^'\n]*)'|({_NAME}))")
# "alert DiskFull", "alerts `DiskFull`" / "the DiskFull alert", "**DiskFull** alerts".
_AFTER_KEYWORD = re.compile(rf"{_KEYWORD}[ \t]+[`*_\"']*({_NAME})(?![{_IDENTIFIER_CHARS}])")
_BEFORE_KEYWORD = re.compile(rf"(?<![{_IDENTIFIER_CHARS}])({_NAME})[`*_\"']*[ \t]+{_KEYWORD}")
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SERVICE_LABEL = re.compile(
    r"(?<![A-Za-z0-9_$.])service[ \t]*(=~|=)[ \t]*(?:\"([^\"\n]*)\"|'([^'\n]*)'|([A-Za-z0-9][A-Za-z0-9_.-]*))"
)
_SPLIT_NAMES = re.compile(r"[\s,]+")


class DocumentError(ValueError):
    """A document that cannot be read or parsed; the message names the file and the reason."""


@dataclass(frozen=True)
class SourceDocument:
    """One parsed Markdown document (see the module docstring for how each field is derived)."""

    source: str
    title: str
    type: DocType
    body: str
    content_hash: str
    alertnames: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    severity: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def is_alert_name(word: str) -> bool:
    """Whether `word` has the shape of an alert name: capitalised, at least two capitalised parts, a lower-case
    letter (so acronyms such as HTTP do not count)."""
    if not re.fullmatch(_NAME, word) or not any(c.islower() for c in word):
        return False
    return len(_CAPITAL_PART.findall(word)) >= 2


def split_front_matter(source: str, text: str) -> tuple[dict[str, Any], str]:
    """(the front matter as parsed, the body); ({}, text) when there is none. Raises DocumentError."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != _FRONT_MATTER_OPEN:
        return {}, text
    for number, line in enumerate(lines[1:], start=1):
        if line.rstrip("\r\n") in _FRONT_MATTER_CLOSE:
            block = "".join(lines[1:number])
            body = "".join(lines[number + 1 :])
            break
    else:
        raise DocumentError(f"{source}: front matter opened with '---' on line 1 is never closed by '---' or '...'")
    try:
        loaded = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        raise DocumentError(f"{source}: front matter is not valid YAML: {_one_line(exc)}") from exc
    if loaded is None:
        return {}, body
    if not isinstance(loaded, dict):
        raise DocumentError(f"{source}: front matter must be a mapping, not {type(loaded).__name__}")
    return _json_compatible(source, loaded, "front matter"), body


def parse_document(source: str, text: str) -> SourceDocument:
    """Parse one document's text; `source` is its path (or any id) and names it in errors."""
    content_hash = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
    normalised = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    metadata, body = split_front_matter(source, normalised)
    prose, fenced = _split_fences(body)
    return SourceDocument(
        source=source,
        title=_title(source, metadata, prose),
        type=_doc_type(source, metadata),
        body=body,
        content_hash=content_hash,
        # Declared alerts are what the document answers; the body's mentions count only when none are declared
        # (inline code also names symptoms such as `CrashLoopBackOff`, which must not become alert filters).
        alertnames=_sorted_unique(
            [*_names_field(source, metadata, "alerts"), *_names_field(source, metadata, "alertnames")]
        )
        or _sorted_unique(alert_names_in(prose, fenced)),
        services=_sorted_unique(
            [*_names_field(source, metadata, "services"), *_names_field(source, metadata, "service")],
            services_in(body),
        ),
        severity=_severity(source, metadata),
        metadata=metadata,
    )


def alert_names_in(prose: str, fenced: str = "") -> set[str]:
    """Alert names mentioned in `prose` (Markdown outside fenced code) and `fenced` (the fenced code's text)."""
    found: set[str] = set()
    for text in (prose, fenced):
        for match in _ASSIGNED.finditer(text):
            value = match.group(1) or match.group(2) or match.group(3) or ""
            found.update(value.split("|"))
    implicit: list[str] = []
    for pattern in (_AFTER_KEYWORD, _BEFORE_KEYWORD):
        implicit.extend(match.group(1) for match in pattern.finditer(prose))
    for match in _INLINE_CODE.finditer(prose):
        implicit.extend(_CANDIDATE.findall(match.group(2)))
    for line in prose.splitlines():
        heading = _ATX_HEADING.match(line)
        if heading and heading.group(2):
            implicit.extend(_CANDIDATE.findall(heading.group(2)))
    found.update(implicit)
    return {name for name in found if is_alert_name(name) and name not in _NOT_ALERTS}


def services_in(text: str) -> set[str]:
    """Service names of `service=` label matchers in `text` (plain names only, no templates)."""
    found: set[str] = set()
    for match in _SERVICE_LABEL.finditer(text):
        operator, value = match.group(1), match.group(2) or match.group(3) or match.group(4) or ""
        values = value.split("|") if operator == "=~" else [value]
        found.update(name for name in values if _SERVICE_NAME.fullmatch(name))
    return found


def find_documents(paths: Sequence[Path]) -> list[Path]:
    """Files given directly (any suffix) and, under given directories, every *.md / *.markdown file (recursive,
    hidden directories and files skipped): resolved, sorted, unique. A path that does not exist: DocumentError."""
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise DocumentError(f"{path}: no such file or directory")
        if not path.is_dir():
            found.add(path.resolve())
            continue
        for directory, subdirs, files in os.walk(path, onerror=_log_walk_error):
            subdirs[:] = [name for name in subdirs if not name.startswith(".")]
            for name in files:
                candidate = Path(directory) / name
                if name.startswith(".") or not name.lower().endswith(MARKDOWN_SUFFIXES) or not candidate.is_file():
                    continue
                found.add(candidate.resolve())
    return sorted(found)


def read_document(path: Path) -> SourceDocument:
    """Read and parse a UTF-8 file; its resolved path is the source. Unreadable or undecodable: DocumentError."""
    resolved = path.resolve()
    try:
        raw = resolved.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{resolved}: cannot be read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{resolved}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    return parse_document(str(resolved), text)


def _log_walk_error(exc: OSError) -> None:
    log.warning("directory skipped while looking for documents", extra={"path": exc.filename, "error": str(exc)})


def humanise(stem: str) -> str:
    """A file stem as a title: "high-error-rate" -> "High error rate"."""
    words = " ".join(re.split(r"[-_\s]+", stem)).strip()
    return words[:1].upper() + words[1:]


def _title(source: str, metadata: dict[str, Any], prose: str) -> str:
    value = metadata.get("title")
    if value is not None:
        if isinstance(value, (dict, list)):
            raise DocumentError(f"{source}: front matter `title` must be a string")
        if str(value).strip():
            return str(value).strip()
    for line in prose.splitlines():
        heading = _ATX_HEADING.match(line)
        if heading and len(heading.group(1)) == 1 and heading.group(2) and heading.group(2).strip():
            return heading.group(2).strip()
    return humanise(PurePath(source).stem) or source


def _doc_type(source: str, metadata: dict[str, Any]) -> DocType:
    value = metadata.get("type")
    if value is not None:
        normalised = str(value).strip().lower() if isinstance(value, str) else value
        if normalised not in DOC_TYPES:
            raise DocumentError(f"{source}: front matter `type` is {value!r}, not one of {', '.join(DOC_TYPES)}")
        return cast(DocType, normalised)
    path = PurePath(source)
    if any(part.lower() in _POSTMORTEM_DIRS for part in path.parts[:-1]) or "postmortem" in path.stem.lower():
        return "postmortem"
    return "runbook"


def _severity(source: str, metadata: dict[str, Any]) -> str | None:
    value = metadata.get("severity")
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise DocumentError(f"{source}: front matter `severity` must be a string")
    return str(value).strip().lower() or None


def _names_field(source: str, metadata: dict[str, Any], key: str) -> list[str]:
    """A front matter list of names, or a single string of names separated by commas or whitespace."""
    value = metadata.get(key)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise DocumentError(f"{source}: front matter `{key}` must be a string or a list of strings")
    return [name for item in items for name in _SPLIT_NAMES.split(item) if name]


def _split_fences(body: str) -> tuple[str, str]:
    """(the body with fenced code blocks blanked out, the fenced blocks' lines); an unclosed fence runs to the end,
    as in CommonMark. Blanked lines keep the line structure of the prose."""
    prose: list[str] = []
    fenced: list[str] = []
    fence: str | None = None
    for line in body.split("\n"):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            prose.append("")
        elif fence is not None:
            closing = _FENCE.match(line)
            closes = closing is not None and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence)
            if closes and not line.strip().strip(fence[0]):  # only fence characters on the line
                fence = None
            else:
                fenced.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), "\n".join(fenced)


def _sorted_unique(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({name.strip() for group in groups for name in group if name.strip()}))


def _json_compatible(source: str, value: Any, where: str) -> Any:
    """YAML values as JSON ones: dates and times as ISO strings, mapping keys as strings."""
    if isinstance(value, dict):
        return {
            str(_json_compatible(source, key, where)): _json_compatible(source, item, f"{where}.{key}")
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple, set)):
        return [_json_compatible(source, item, where) for item in value]
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise DocumentError(f"{source}: {where} holds a {type(value).__name__} value, which JSON cannot represent")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
