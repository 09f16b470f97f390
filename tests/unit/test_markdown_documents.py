"""Markdown documents: front matter, title and type rules, alert names and services, hashing, finding files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from knowledge.markdown_documents import (
    DOC_TYPES,
    DocumentError,
    find_documents,
    is_alert_name,
    parse_document,
    read_document,
)

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "deploy" / "demo" / "runbooks"


def _fm(front_matter: str, body: str = "Some text.\n") -> str:
    return f"---\n{front_matter}\n---\n{body}"


def test_doc_types() -> None:
    assert DOC_TYPES == ("runbook", "postmortem", "incident")


def test_front_matter_fields_and_body() -> None:
    text = _fm(
        "title: Disk full\ntype: runbook\nalerts: [DiskFull, DiskUsageHigh]\nservices: [checkout, billing]\n"
        "severity: Warning\nowner: sre\ntags: [disk]",
        "# Another title\n\nBody.\n",
    )
    doc = parse_document("runbooks/disk.md", text)
    assert doc.title == "Disk full"
    assert doc.type == "runbook"
    assert doc.alertnames == ("DiskFull", "DiskUsageHigh")
    assert doc.services == ("billing", "checkout")
    assert doc.severity == "warning"
    assert doc.body == "# Another title\n\nBody.\n"
    assert doc.metadata["owner"] == "sre"
    assert doc.metadata["tags"] == ["disk"]
    assert doc.source == "runbooks/disk.md"


@pytest.mark.parametrize(
    ("front_matter", "alertnames", "services"),
    [
        ("alerts: ServiceDown", ("ServiceDown",), ()),
        ("alertnames: ServiceDown, TargetDown", ("ServiceDown", "TargetDown"), ()),
        ("alerts: [ServiceDown]\nalertnames: [TargetDown, ServiceDown]", ("ServiceDown", "TargetDown"), ()),
        ("service: checkout", (), ("checkout",)),
        ("services: checkout billing", (), ("billing", "checkout")),
        ("services: []\nalerts: []", (), ()),
    ],
)
def test_lists_or_strings(front_matter: str, alertnames: tuple[str, ...], services: tuple[str, ...]) -> None:
    doc = parse_document("x.md", _fm(front_matter))
    assert doc.alertnames == alertnames
    assert doc.services == services


def test_dates_become_iso_strings_and_metadata_is_json() -> None:
    doc = parse_document(
        "x.md", _fm("date: 2024-05-01\nreviewed: 2024-05-02T10:30:00Z\nnested: {when: 2024-01-01, n: [1, 2]}\n1: one")
    )
    assert doc.metadata["date"] == "2024-05-01"
    assert doc.metadata["reviewed"].startswith("2024-05-02T10:30:00")
    assert doc.metadata["nested"] == {"when": "2024-01-01", "n": [1, 2]}
    assert doc.metadata["1"] == "one"
    json.dumps(doc.metadata)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_fm("title: [unclosed"), "not valid YAML"),
        (_fm("- a\n- b"), "must be a mapping, not list"),
        (_fm("just a string"), "must be a mapping, not str"),
        (_fm("type: howto"), "`type` is 'howto'"),
        (_fm("type: 3"), "`type` is 3"),
        (_fm("alerts: {a: b}"), "`alerts` must be a string or a list of strings"),
        (_fm("services: [1, 2]"), "`services` must be a string or a list of strings"),
        (_fm("title: {a: b}"), "`title` must be a string"),
        (_fm("blob: !!binary aGVsbG8="), "JSON cannot represent"),
        ("---\ntitle: x\nno end\n", "never closed"),
    ],
)
def test_malformed_front_matter(text: str, message: str) -> None:
    with pytest.raises(DocumentError, match="bad.md") as caught:
        parse_document("/docs/bad.md", text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "---\ntitle: T\n...\nbody\n",
        "---\r\ntitle: T\r\n---\r\nbody\r\n",
        "\ufeff---\ntitle: T\n---\nbody\n",
    ],
)
def test_front_matter_delimiters(text: str) -> None:
    doc = parse_document("x.md", text)
    assert doc.title == "T"
    assert doc.body.strip() == "body"


def test_empty_front_matter_and_none() -> None:
    assert parse_document("x.md", "---\n---\n# H\n").metadata == {}
    doc = parse_document("x.md", "# H\n---\nnot front matter: true\n---\n")
    assert doc.metadata == {}
    assert doc.body == "# H\n---\nnot front matter: true\n---\n"


@pytest.mark.parametrize(
    ("source", "text", "title"),
    [
        ("a/disk.md", _fm("title: '  From front matter '", "# Heading\n"), "From front matter"),
        ("a/disk.md", "Intro\n\n## Second level\n\n# First level #\n", "First level"),
        ("a/disk.md", "```\n# not a heading\n```\n\n# Real\n", "Real"),
        ("a/high-error_rate.md", "No heading here.\n", "High error rate"),
        ("a/disk.md", _fm("title: ''", "#NoSpace is not a heading\n"), "Disk"),
        ("incident-42", "text", "Incident 42"),
    ],
)
def test_title_rules(source: str, text: str, title: str) -> None:
    assert parse_document(source, text).title == title


@pytest.mark.parametrize(
    ("source", "text", "doc_type"),
    [
        ("/docs/runbooks/disk.md", "x", "runbook"),
        ("/docs/postmortems/2024-01-outage.md", "x", "postmortem"),
        ("/docs/Postmortem/outage.md", "x", "postmortem"),
        ("/docs/2024-01-outage-postmortem.md", "x", "postmortem"),
        ("/docs/PostMortem-db.md", "x", "postmortem"),
        ("/postmortems-archive/outage.md", "x", "runbook"),
        ("/docs/postmortems/x.md", _fm("type: incident"), "incident"),
        ("/docs/postmortems/x.md", _fm("type: Runbook"), "runbook"),
    ],
)
def test_type_rules(source: str, text: str, doc_type: str) -> None:
    assert parse_document(source, text).type == doc_type


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("HighErrorRate", True),
        ("KubePodCrashLooping", True),
        ("ServiceDown", True),
        ("KubeAPIDown", True),
        ("HTTPServer5xx", True),
        ("Watchdog", False),
        ("HTTP", False),
        ("CPU", False),
        ("highErrorRate", False),
        ("High_Error", False),
    ],
)
def test_alert_name_shape(word: str, expected: bool) -> None:
    assert is_alert_name(word) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("The `HighErrorRate` alert fired.", {"HighErrorRate"}),
        ("Check `KubePodCrashLooping` first.", {"KubePodCrashLooping"}),
        ("## ServiceDown\n\nThe service is down.", {"ServiceDown"}),
        ("# Runbook: TargetDown / ServiceDown", {"ServiceDown", "TargetDown"}),
        ('Query `ALERTS{alertname="DiskFull"}`.', {"DiskFull"}),
        ("Filter on alertname=DiskFull in Alertmanager.", {"DiskFull"}),
        ("Silence alertname =~ \"DiskFull|DiskUsageHigh\" for an hour.", {"DiskFull", "DiskUsageHigh"}),
        ("When the DiskFull alert fires, look at the disk.", {"DiskFull"}),
        ("Both **HighLatency** alerts resolved.", {"HighLatency"}),
        ("Alert HighLatency is a warning.", {"HighLatency"}),
        ("```yaml\n- alert: DiskFull\n  expr: x\n```", {"DiskFull"}),
        ('```promql\nALERTS{alertname="ServiceDown"}\n```', {"ServiceDown"}),
        # Prose, fenced code and product names do not count.
        ("We page through PagerDuty; the database is PostgreSQL; the UI is JavaScript.", set()),
        ("You will get a PagerDuty alert.", set()),
        ("## Escalate via PagerDuty", set()),
        ("Use `PagerDuty` to page.", set()),
        ("```python\nclass HashingEmbedder:\n    raise ValueError()\n```", set()),
        ("```\n## ServiceDown in a fence\n`HighErrorRate`\n```", set()),
        ('ALERTS{alertname!="InfoInhibitor"}', set()),
        ("The HighErrorRate of the service went up.", set()),
        ("alerting HighErrorRate", set()),
        ("`Watchdog` alert, `HTTP` alert", set()),
    ],
)
def test_alert_names_in_body(body: str, expected: set[str]) -> None:
    assert set(parse_document("x.md", body).alertnames) == expected


def test_declared_alert_names_win_over_the_bodys_mentions() -> None:
    body = "The `DiskFull` and `CpuHot` alerts; pods in `CrashLoopBackOff`.\n"
    declared = parse_document("x.md", _fm("alerts: [ZetaAlertName, DiskFull, DiskFull]", body))
    assert declared.alertnames == ("DiskFull", "ZetaAlertName")
    undeclared = parse_document("y.md", _fm("title: T", body))
    assert undeclared.alertnames == ("CpuHot", "CrashLoopBackOff", "DiskFull")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('up{service="checkout"}', {"checkout"}),
        ("up{service=checkout-api,env=prod}", {"checkout-api"}),
        ("up{service='billing.v2'}", {"billing.v2"}),
        ('rate(x{service=~"a|b"}[5m])', {"a", "b"}),
        ('up{service="{service}"} and up{service="<service>"} and up{service=""}', set()),
        ('up{service!="checkout"}', set()),
        ("target_service=checkout $service=x", set()),
        ("The checkout service is down.", set()),
    ],
)
def test_services_in_body(body: str, expected: set[str]) -> None:
    assert set(parse_document("x.md", body).services) == expected


def test_services_merge_front_matter_and_body() -> None:
    doc = parse_document("x.md", _fm("service: checkout", '`up{service="billing"}`, `up{service="checkout"}`'))
    assert doc.services == ("billing", "checkout")


def test_severity() -> None:
    assert parse_document("x.md", "no front matter").severity is None
    assert parse_document("x.md", _fm("severity: CRITICAL")).severity == "critical"


def test_content_hash_covers_the_whole_text() -> None:
    text = _fm("title: T\nseverity: warning", "# T\n\nBody.\n")
    doc = parse_document("x.md", text)
    assert doc.content_hash == hashlib.sha256(text.encode()).hexdigest()
    edited = parse_document("x.md", text.replace("warning", "critical"))
    assert edited.body == doc.body
    assert edited.content_hash != doc.content_hash


def _write(path: Path, text: str = "# x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_find_documents(tmp_path: Path) -> None:
    a = _write(tmp_path / "docs" / "a.md")
    b = _write(tmp_path / "docs" / "sub" / "deeper" / "b.markdown")
    c = _write(tmp_path / "docs" / "C.MD")
    _write(tmp_path / "docs" / "notes.txt")
    _write(tmp_path / "docs" / ".hidden.md")
    _write(tmp_path / "docs" / ".git" / "x.md")
    _write(tmp_path / "docs" / "sub" / ".cache" / "y.md")
    direct = _write(tmp_path / "elsewhere" / "notes.txt")
    found = find_documents([tmp_path / "docs", direct, tmp_path / "docs" / "a.md", tmp_path / "docs" / "sub"])
    assert found == sorted({a.resolve(), b.resolve(), c.resolve(), direct.resolve()})


def test_find_documents_resolves_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _write(tmp_path / "docs" / "a.md")
    monkeypatch.chdir(tmp_path)
    assert find_documents([Path("docs"), Path("docs/../docs/a.md")]) == [a.resolve()]


def test_find_documents_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="missing"):
        find_documents([tmp_path / "missing"])


def test_read_document(tmp_path: Path) -> None:
    path = _write(tmp_path / "postmortems" / "outage.md", _fm("title: Outage", "# Outage\n\nDetails.\n"))
    doc = read_document(path)
    assert doc.source == str(path.resolve())
    assert doc.type == "postmortem"
    assert doc.title == "Outage"


@pytest.mark.parametrize(("name", "content"), [("latin1.md", "café".encode("latin-1")), ("dir.md", None)])
def test_read_document_errors(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(DocumentError, match=name):
        read_document(path)


def test_read_document_missing(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="cannot be read"):
        read_document(tmp_path / "nope.md")


@pytest.mark.parametrize("path", sorted(RUNBOOKS.glob("*.md")), ids=lambda path: path.name)
def test_demo_runbooks_parse(path: Path) -> None:
    doc = read_document(path)
    assert doc.type == "runbook"
    assert doc.alertnames
    assert doc.severity in ("warning", "critical")
    assert set(doc.alertnames) == set(doc.metadata["alerts"])  # the body names no other alert
    assert doc.services == ()
