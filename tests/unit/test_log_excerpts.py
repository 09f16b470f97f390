"""The file log source: which files are a service's, what of them is read, and what stays out of reach."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from knowledge.log_excerpts import FileLogSource


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    write(logs / "checkout.log", "GET / 200", "ERROR db timeout", "GET / 200", "Traceback (most recent call last):")
    write(logs / "checkout-worker.log", "FATAL worker died")
    write(logs / "checkoutx.log", "ERROR not ours")
    write(logs / "cart.log", "ERROR not ours either")
    write(logs / "checkout" / "app.txt", "connection refused by upstream", "all fine")
    write(outside / "secret.log", "ERROR secret")
    return logs, outside


async def test_a_services_files_give_their_last_error_lines(roots: tuple[Path, Path]) -> None:
    logs, _ = roots

    found = await FileLogSource([logs]).excerpts("checkout")

    assert found.status == "ok"
    by_file = {Path(e.path).relative_to(logs.resolve()).as_posix(): (e.lines, e.matched) for e in found.excerpts}
    assert by_file == {
        "checkout.log": (["ERROR db timeout", "Traceback (most recent call last):"], 2),
        "checkout-worker.log": (["FATAL worker died"], 1),
        "checkout/app.txt": (["connection refused by upstream"], 1),
    }


async def test_only_the_last_lines_and_the_tail_of_a_file_are_read(tmp_path: Path) -> None:
    write(tmp_path / "api.log", *(f"line {i} error" for i in range(1000)))

    found = await FileLogSource([tmp_path], tail_bytes=200).excerpts("api", max_lines=3)

    (excerpt,) = found.excerpts
    assert excerpt.lines == ["line 997 error", "line 998 error", "line 999 error"]
    assert excerpt.scanned_bytes == 200
    assert all(line.startswith("line ") for line in excerpt.lines)  # the cut first line was dropped


@pytest.mark.parametrize(
    ("log_file", "status", "lines"),
    [
        ("checkout.log", "ok", ["ERROR db timeout", "Traceback (most recent call last):"]),
        ("cart.log", "ok", ["ERROR not ours either"]),
        ("../outside/secret.log", "error", None),
        ("/etc/passwd", "error", None),
        ("missing.log", "error", None),
    ],
)
async def test_an_alert_may_name_its_log_file_inside_the_roots(
    roots: tuple[Path, Path], log_file: str, status: str, lines: list[str] | None
) -> None:
    logs, _ = roots

    found = await FileLogSource([logs]).excerpts("checkout", log_file=log_file)

    assert found.status == status
    if lines is None:
        assert found.excerpts == [] and "not a regular file inside the allowlisted log roots" in (found.error or "")
    else:
        assert [e.lines for e in found.excerpts] == [lines]


async def test_a_symlink_out_of_the_roots_is_not_followed(roots: tuple[Path, Path]) -> None:
    logs, outside = roots
    os.symlink(outside / "secret.log", logs / "payments.log")

    found = await FileLogSource([logs]).excerpts("payments")

    assert (found.status, found.files, found.excerpts) == ("empty", [], [])


@pytest.mark.parametrize(
    ("roots_given", "service", "status", "error"),
    [
        ([], "checkout", "unconfigured", "no log roots configured"),
        (None, "../outside", "error", "service '../outside' is not usable as a file name"),
        (None, "quiet", "empty", None),
    ],
)
async def test_what_cannot_be_read_says_why(
    roots: tuple[Path, Path], roots_given: list[Path] | None, service: str, status: str, error: str | None
) -> None:
    logs, _ = roots
    write(logs / "quiet.log", "all good", "still good")

    found = await FileLogSource(roots_given if roots_given is not None else [logs]).excerpts(service)

    assert (found.status, found.error) == (status, error)
