"""clear_disk on real files: old regular files directly inside an allowlisted directory go, nothing else does."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from bus.events import PlanStep
from execution.adapters.disk_cleanup import ClearDiskAdapter, DiskCleanupConfig
from execution.catalog import default_catalog
from execution.executor import ActionExecutor
from tests.integration.execution_support import age_file

HOUR = 3600.0


@dataclass
class Tree:
    root: Path  # allowlisted
    outside: Path  # not allowlisted

    def adapter(self) -> ClearDiskAdapter:
        return ClearDiskAdapter(DiskCleanupConfig(allowed_roots=[self.root]))


def clear(path: Path | str, min_age_s: float = HOUR, **params: object) -> PlanStep:
    return PlanStep(action="clear_disk", target="host", params={"path": str(path), "min_age_s": min_age_s, **params})


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """root/{old-1.log (100 B, 2 h), old-2.log (250 B, 3 h), new.log (10 min), sub/old-deep.log (2 h),
    link-to-outside (symlink to an old file outside)}; outside/{old-outside.log (2 h)}."""
    now = time.time()
    root, outside = tmp_path / "logs", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for path, size, age in [
        (root / "old-1.log", 100, 2 * HOUR),
        (root / "old-2.log", 250, 3 * HOUR),
        (root / "new.log", 10, 600),
        (root / "sub" / "old-deep.log", 10, 2 * HOUR),
        (outside / "old-outside.log", 10, 2 * HOUR),
    ]:
        path.write_bytes(b"x" * size)
        age_file(path, age, now=now)
    (root / "link-to-outside").symlink_to(outside / "old-outside.log")
    age_file(root / "link-to-outside", 2 * HOUR, now=now)
    return Tree(root=root, outside=outside)


def names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


async def test_old_regular_files_directly_inside_are_deleted(tree: Tree) -> None:
    result = await tree.adapter().execute(clear(tree.root), timeout_s=10)
    assert result.status == "succeeded", result
    assert sorted(result.data["files"]) == ["old-1.log", "old-2.log"]
    assert result.data["files_deleted"] == 2 and result.data["bytes_freed"] == 350
    assert result.data["skipped_recent"] == 1 and result.data["skipped_not_regular"] == 2  # sub/, the symlink
    assert names(tree.root) == {"new.log", "sub", "link-to-outside"}
    assert names(tree.root / "sub") == {"old-deep.log"}
    assert names(tree.outside) == {"old-outside.log"}


async def test_a_directory_inside_an_allowed_root_may_be_cleared(tree: Tree) -> None:
    result = await tree.adapter().execute(clear(tree.root / "sub"), timeout_s=10)
    assert result.status == "succeeded" and result.data["files"] == ["old-deep.log"]
    assert names(tree.root / "sub") == set()
    assert "old-1.log" in names(tree.root)


async def test_dry_run_reports_and_deletes_nothing(tree: Tree) -> None:
    before = names(tree.root)
    result = await tree.adapter().execute(clear(tree.root, dry_run=True), timeout_s=10)
    assert result.status == "succeeded" and result.data["dry_run"] is True
    assert result.data["files_deleted"] == 2 and result.data["bytes_freed"] == 350
    assert names(tree.root) == before


async def test_min_age_decides_what_is_old(tree: Tree) -> None:
    result = await tree.adapter().execute(clear(tree.root, min_age_s=2.5 * HOUR), timeout_s=10)
    assert result.data["files"] == ["old-2.log"]
    assert "old-1.log" in names(tree.root)


@pytest.mark.parametrize(
    ("where", "error"),
    [
        (lambda t: t.outside, "outside the allowed roots"),
        (lambda t: t.root / ".." / "outside", "outside the allowed roots"),
        (lambda t: t.root / "escape", "a symlink escapes them"),
        (lambda t: t.root / "missing", "does not exist"),
        (lambda t: t.root / "new.log", "is not a directory"),
    ],
    ids=["outside", "dot-dot", "symlink-escape", "missing", "not-a-directory"],
)
async def test_paths_that_are_not_allowed_are_refused(tree: Tree, where, error: str) -> None:  # noqa: ANN001
    (tree.root / "escape").symlink_to(tree.outside, target_is_directory=True)
    result = await tree.adapter().execute(clear(where(tree)), timeout_s=10)
    assert result.status == "refused" and error in (result.error or ""), result
    assert names(tree.outside) == {"old-outside.log"}
    assert {"old-1.log", "old-2.log"} <= names(tree.root)


async def test_an_allowed_root_that_resolves_to_slash_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root-alias").symlink_to("/", target_is_directory=True)
    adapter = ClearDiskAdapter(DiskCleanupConfig(allowed_roots=[tmp_path / "root-alias"]))
    result = await adapter.execute(clear(tmp_path / "root-alias" / "tmp"), timeout_s=10)
    assert result.status == "refused" and "resolves to /" in (result.error or "")


@pytest.mark.parametrize("roots", [[Path("/")], [Path("/var/..")], [Path("relative/logs")], []])
def test_config_refuses_slash_relative_or_no_roots(roots: list[Path]) -> None:
    with pytest.raises(ValidationError):
        DiskCleanupConfig(allowed_roots=roots)


async def test_the_executor_refuses_a_min_age_below_the_catalog_minimum(tree: Tree) -> None:
    executor = ActionExecutor(default_catalog(), {"clear_disk": tree.adapter()})
    result = await executor.execute(clear(tree.root, min_age_s=1), timeout_s=10)
    assert result.status == "refused" and "min_age_s" in (result.error or "")
    assert {"old-1.log", "old-2.log"} <= names(tree.root)
