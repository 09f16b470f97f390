"""Target files for the local Prometheus's file-based discovery: what `register_target` writes, what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.prometheus_targets import register_target, unregister_target


def test_a_target_file_lists_the_address_and_labels(tmp_path: Path) -> None:
    path = register_target(tmp_path, "checkout", "127.0.0.1:18080", {"scenario": "crash"})
    assert path == tmp_path / "prometheus" / "targets" / "checkout.json"
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:18080"], "labels": {"scenario": "crash"}}]
    register_target(tmp_path, "checkout", "127.0.0.1:18081")
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:18081"], "labels": {}}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkout.json"]
    assert unregister_target(tmp_path, "checkout") is True
    assert unregister_target(tmp_path, "checkout") is False
    assert not path.exists()


@pytest.mark.parametrize(
    ("name", "address", "labels", "error"),
    [
        ("../escape", "127.0.0.1:1", {}, "invalid target name"),
        ("", "127.0.0.1:1", {}, "invalid target name"),
        ("ok", "127.0.0.1", {}, "invalid target address"),
        ("ok", "http://127.0.0.1:80", {}, "invalid target address"),
        ("ok", "127.0.0.1:1", {"__address__": "x"}, "invalid label name"),
        ("ok", "127.0.0.1:1", {"bad-name": "x"}, "invalid label name"),
    ],
)
def test_invalid_targets_are_refused(
    tmp_path: Path, name: str, address: str, labels: dict[str, str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        register_target(tmp_path, name, address, labels)
    assert list(tmp_path.rglob("*")) == []
