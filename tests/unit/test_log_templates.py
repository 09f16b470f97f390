"""Log summaries: floods collapse into templates with counts, variable parts are masked, errors come first."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.log_excerpts import FileLogSource
from knowledge.log_templates import LogSummary, summarize_lines, summarize_log


def flood(total: int = 5000) -> list[str]:
    """Three kinds of lines, 70% / 20% / 10%, every variable part different from line to line."""
    lines = []
    for i in range(total):
        ts = f"2026-03-01T12:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}Z"
        if i % 10 < 7:
            ip = f"10.0.{i % 255}.{i % 200}:{40000 + i}"
            lines.append(f"{ts} INFO GET /api/orders/{i * 13} 200 in {i % 900 + 1}ms from {ip}")
        elif i % 10 < 9:
            lines.append(f"{ts} WARN user {i} failed after {i % 90 + 1}ms request_id=550e8400-e29b-41d4-a716-{i:012d}")
        else:
            lines.append(f"{ts} ERROR db pool exhausted conn=0x{i * 7919:x} waited {i % 5}.5s")
    return lines


def test_a_flood_of_three_kinds_collapses_into_three_templates_with_their_counts() -> None:
    summary = summarize_lines(flood(), path="checkout.log")

    assert (summary.lines_read, summary.total_templates, summary.truncated) == (5000, 3, False)
    assert [(t.level, t.count, t.first_line, t.last_line) for t in summary.templates] == [
        ("ERROR", 500, 10, 5000),
        ("WARN", 1000, 8, 4999),
        ("INFO", 3500, 1, 4997),
    ]
    assert [t.template for t in summary.templates] == [
        "ERROR db pool exhausted conn=<HEX> waited <DURATION>",
        "WARN user <NUM> failed after <DURATION> request_id=<UUID>",
        "INFO GET /api/orders/<NUM> <NUM> in <DURATION> from <IP>",
    ]
    assert summary.templates[2].example.startswith("2026-03-01T12:00:00.000Z INFO GET /api/orders/0 200")


@pytest.mark.parametrize(
    ("lines", "template"),
    [
        (["user 123 failed after 45ms", "user 9 failed after 3ms"], "user <NUM> failed after <DURATION>"),
        (["job 0x1f3a done", "job 0xDEADBEEF done"], "job <HEX> done"),
        (["trace 4bf92f3577b34da6a3ce929d0e0e4736 sampled"], "trace <HEX> sampled"),
        (["order 550e8400-e29b-41d4-a716-446655440000 paid"], "order <UUID> paid"),
        (["connect to 10.1.2.3:5432 refused", "connect to 192.168.0.1 refused"], "connect to <IP> refused"),
        (["cache warmed at 2026-01-01T00:00:00+02:00 ok"], "cache warmed at <TIMESTAMP> ok"),
        (["retry in 1h2m3.5s", "retry in 30 seconds"], "retry in <DURATION>"),
        (["balance=-42.5 limit=+10"], "balance=<NUM> limit=<NUM>"),
    ],
)
def test_numbers_ids_uuids_ips_timestamps_and_durations_are_masked(lines: list[str], template: str) -> None:
    summary = summarize_lines(lines)

    assert [(t.template, t.count) for t in summary.templates] == [(template, len(lines))]


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-01T10:00:00Z ",
        "[2026-01-01 10:00:00,123] ",
        "2026-01-01 10:00:00.5+0100 | ",
        "Jan  2 12:00:00 ",
        "1767225600.25 ",
    ],
)
def test_a_leading_timestamp_is_stripped_before_mining(stamp: str) -> None:
    summary = summarize_lines([f"{stamp}worker started", "worker started"])

    assert [(t.template, t.count, t.example) for t in summary.templates] == [
        ("worker started", 2, f"{stamp}worker started".strip())
    ]


@pytest.mark.parametrize(
    ("lines", "order"),
    [
        (
            ["INFO tick"] * 50 + ["WARN slow disk"] * 5 + ["ERROR disk full"],
            [("ERROR", 1), ("WARN", 5), ("INFO", 50)],
        ),
        (  # no level said: error words make it an error
            ["cache hit"] * 9 + ["connection refused by upstream"] * 2 + ["Traceback (most recent call last):"],
            [(None, 2), (None, 1), (None, 9)],
        ),
        (  # logfmt levels, any case
            ['level=debug msg="poll"'] * 3 + ['level=Error msg="poll"'] + ['level=fatal msg="boom"'],
            [("FATAL", 1), ("ERROR", 1), ("DEBUG", 3)],
        ),
    ],
)
def test_errors_come_first_then_the_most_frequent(lines: list[str], order: list[tuple[str | None, int]]) -> None:
    summary = summarize_lines(lines)

    assert [(t.level, t.count) for t in summary.templates] == order


@pytest.mark.parametrize(
    ("kinds", "max_templates", "shown", "truncated"), [(5, 3, 3, True), (3, 3, 3, False), (4, 0, 0, True)]
)
def test_only_max_templates_are_kept_and_the_rest_is_flagged(
    kinds: int, max_templates: int, shown: int, truncated: bool
) -> None:
    words = ["alpha", "bravo", "charlie", "delta", "echo"]
    lines = [f"{words[k]} event happened here" for k in range(kinds) for _ in range(k + 1)]

    summary = summarize_lines(lines, max_templates=max_templates, similarity=0.9)

    assert (len(summary.templates), summary.truncated, summary.total_templates) == (shown, truncated, kinds)
    assert [t.count for t in summary.templates] == sorted(range(1, kinds + 1), reverse=True)[:shown]


@pytest.mark.parametrize("max_chars", [60, 200, 4000])
def test_the_text_for_a_model_is_bounded_and_says_counts(max_chars: int) -> None:
    lines = flood(2000) + [f"unique kind {w} of line" for w in ("one", "two", "three")]
    text = summarize_lines(lines, path="/logs/checkout.log", similarity=0.9).as_text(max_chars=max_chars)

    assert len(text) <= max_chars
    assert text.startswith("/logs/checkout.log: 2003 lines, ")
    if max_chars >= 200:
        assert "200× [ERROR] ERROR db pool exhausted conn=<HEX> waited <DURATION> (first seen line 10" in text
    if max_chars == 4000:
        assert "1400× [INFO]" in text and "more templates not shown" not in text
    if max_chars == 200:
        assert text.endswith("more templates not shown")


@pytest.mark.parametrize(
    "lines",
    [[], [""], ["   ", "\t"], ["2026-01-01T10:00:00Z", "[2026-01-01 10:00:00,123]", "Jan  2 12:00:00 "]],
    ids=["nothing", "blank", "whitespace", "only-timestamps"],
)
def test_lines_with_nothing_to_mine_give_no_templates(lines: list[str]) -> None:
    summary = summarize_lines(lines, path="x.log")

    assert (summary.lines_read, summary.templates, summary.truncated, summary.status) == (len(lines), [], False, "ok")
    assert summary.as_text() == f"x.log: {len(lines)} lines, 0 templates"


async def test_a_services_log_under_an_allowed_root_is_summarized(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "checkout.log").write_text("".join(f"{line}\n" for line in flood(3000)))

    summary = await summarize_log(FileLogSource([logs], tail_bytes=1024 * 1024), "checkout", None, max_lines=1000)

    assert (summary.status, summary.path, summary.lines_read) == ("ok", str((logs / "checkout.log").resolve()), 1000)
    assert sorted(t.count for t in summary.templates) == [100, 200, 700]
    assert summary.templates[0].level == "ERROR"


@pytest.mark.parametrize(
    ("roots", "service", "log_file", "status", "error"),
    [
        ("logs", "checkout", "../outside/secret.log", "error", "not a regular file inside the allowlisted log roots"),
        ("logs", "checkout", None, "empty", None),
        (None, "checkout", None, "unconfigured", "no log roots configured"),
    ],
)
async def test_a_log_outside_the_roots_or_missing_is_refused_as_data(
    tmp_path: Path, roots: str | None, service: str, log_file: str | None, status: str, error: str | None
) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.log").write_text("ERROR secret 1\n")
    source = FileLogSource([tmp_path / roots] if roots else [])

    summary = await summarize_log(source, service, log_file)

    assert isinstance(summary, LogSummary)
    assert (summary.status, summary.templates, summary.lines_read) == (status, [], 0)
    assert (error or "") in (summary.error or "") and (error is not None) == (summary.error is not None)
    assert summary.as_text().startswith(f"no log summary ({status})")
    assert "secret" not in summary.as_text().replace("secret.log", "")
