"""The action catalog and the diagnostic allowlist: what may be named, with which params, and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bus.events import PlanStep
from execution.catalog import ActionSpec, Catalog, NamedOnlyParams, ScaleParams, default_catalog, default_specs
from execution.diagnostics import DiagnosticAllowlist, DiagnosticCommand


def step(action: str, **params: object) -> PlanStep:
    return PlanStep(action=action, target="checkout", params=params)


@pytest.mark.parametrize(
    "plan_step",
    [
        step("restart_process"),
        step("restart_process", grace_s=30),
        step("scale", replicas=3),
        step("rollback_deploy", to_version="2026.11.3-rc1"),
        step("clear_disk", path="/var/log/checkout", min_age_s=86400),
        step("clear_disk", path="/var/log/checkout", dry_run=True),
        step("flush_connection_pool"),
        step("flush_connection_pool", pool="replica"),
        step("run_allowlisted_script", script="vacuum", args=["--table", "orders"]),
    ],
)
def test_valid_steps_have_no_problems(plan_step: PlanStep) -> None:
    assert default_catalog().validate_step(plan_step) == []


@pytest.mark.parametrize(
    ("plan_step", "problem"),
    [
        (step("reboot_host"), "unknown action 'reboot_host': not in the catalog"),
        (step("scale"), "invalid params for scale: replicas: Field required"),
        (step("scale", replicas=0), "replicas: Input should be greater than or equal to 1"),
        (step("scale", replicas="many"), "replicas: Input should be a valid integer"),
        (step("scale", replicas=2, force=True), "force: Extra inputs are not permitted"),
        (step("rollback_deploy"), "to_version: Field required"),
        (step("rollback_deploy", to_version="v1; rm -rf /"), "to_version: String should match pattern"),
        (step("clear_disk", path="var/log"), "path: Value error, must be an absolute path"),
        (step("clear_disk", path="/var/log", min_age_s=5), "min_age_s: Input should be greater than or equal to 60"),
        (step("run_allowlisted_script", args=["x"]), "script: Field required"),
        (step("delete_data", table="orders"), "action 'delete_data' is FORBIDDEN"),
        (step("failover_database"), "action 'failover_database' is FORBIDDEN"),
        (step("change_security_policy"), "action 'change_security_policy' is FORBIDDEN"),
    ],
)
def test_invalid_steps_are_named_with_their_problem(plan_step: PlanStep, problem: str) -> None:
    problems = default_catalog().validate_step(plan_step)
    assert len(problems) == 1 and problem in problems[0], problems


def test_get_returns_the_spec_or_none() -> None:
    catalog = default_catalog()
    scale = catalog.get("scale")
    assert scale is not None and scale.params is ScaleParams and scale.rollback_action == "scale"
    assert catalog.get("reboot_host") is None


def test_the_forbidden_actions_are_in_the_catalog_so_they_can_be_named() -> None:
    catalog = default_catalog()
    floors = {name: spec.tier_floor for name in catalog.names() if (spec := catalog.get(name)) is not None}
    forbidden = [name for name, floor in floors.items() if floor == "FORBIDDEN"]
    assert forbidden == ["change_security_policy", "delete_data", "failover_database"]


@pytest.mark.parametrize(
    ("script", "floor"), [("rotate_logs", "SAFE"), ("vacuum", "CONFIRM"), (None, "CONFIRM")]
)
def test_a_script_marked_safe_lowers_the_floor_of_run_allowlisted_script(script: str | None, floor: str) -> None:
    spec = default_catalog(safe_scripts=["rotate_logs"]).get("run_allowlisted_script")
    assert spec is not None and spec.floor_for({"script": script}) == floor


def spec(name: str = "act", **overrides: object) -> ActionSpec:
    fields: dict[str, object] = {
        "name": name, "description": "d", "base_risk": 0.1, "tier_floor": "SAFE", "params": NamedOnlyParams,
        "reversible": False, "blast_radius": "instance",
    }
    return ActionSpec(**{**fields, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reversible": True}, "a reversible action names its rollback_action"),
        ({"rollback_action": "act"}, "a reversible action names its rollback_action"),
        ({"safe_when": {"script": frozenset({"x"})}}, "safe_when only lowers a CONFIRM floor"),
        ({"base_risk": 1.5}, "less than or equal to 1"),
        ({"name": "Drop Table"}, "String should match pattern"),
    ],
)
def test_inconsistent_specs_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**overrides)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([spec("a"), spec("a")], "'a' is in the catalog twice"),
        ([spec("a", reversible=True, rollback_action="undo_a")], "rollback action 'undo_a' is not in the catalog"),
    ],
)
def test_inconsistent_catalogs_are_rejected(specs: list[ActionSpec], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Catalog(specs)


def test_every_default_reversible_action_has_its_rollback_in_the_catalog() -> None:
    specs = default_specs()
    names = {s.name for s in specs}
    assert all(s.rollback_action in names for s in specs if s.reversible)
    assert len(Catalog(specs).names()) == len(specs)


@pytest.mark.parametrize(
    ("name", "params", "argv"),
    [
        ("uptime", {}, ["uptime"]),
        ("disk_usage", {"path": "/var/lib/postgresql"}, ["df", "-h", "/var/lib/postgresql"]),
        ("process_info", {"pid": "4242"}, ["ps", "-o", "pid,etime,cmd", "-p", "4242"]),
    ],
)
def test_allowed_diagnostics_render_to_argv(name: str, params: dict[str, str], argv: list[str]) -> None:
    assert DiagnosticAllowlist().render(name, params) == (argv, [])


@pytest.mark.parametrize(
    ("name", "params", "problem"),
    [
        ("rm", {"path": "/"}, "diagnostic 'rm' is not in the allowlist"),
        ("bash", {}, "diagnostic 'bash' is not in the allowlist"),
        ("disk_usage", {}, "missing param 'path'"),
        ("disk_usage", {"path": "/tmp; rm -rf /"}, "param 'path' does not match"),
        ("disk_usage", {"path": "relative"}, "param 'path' does not match"),
        ("process_info", {"pid": "-1"}, "param 'pid' does not match"),
        ("process_info", {"pid": "1 2"}, "param 'pid' does not match"),
        ("uptime", {"extra": "x"}, "unexpected param 'extra'"),
    ],
)
def test_anything_else_is_refused(name: str, params: dict[str, str], problem: str) -> None:
    argv, problems = DiagnosticAllowlist().render(name, params)
    assert argv is None and problem in "; ".join(problems), problems


@pytest.mark.parametrize(
    ("argv", "params", "message"),
    [
        (("{program}",), {"program": ".*"}, "the program itself cannot be a parameter"),
        (("df", "{path}"), {}, "differ"),
        (("df",), {"path": "/.*"}, "differ"),
    ],
)
def test_diagnostic_definitions_must_be_consistent(argv: tuple[str, ...], params: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DiagnosticCommand(name="bad", argv=argv, params=params)


def test_an_option_shaped_value_never_passes_even_if_the_pattern_allows_it() -> None:
    command = DiagnosticCommand(name="anything", argv=("echo", "{word}"), params={"word": ".*"})
    assert command.render({"word": "--help"}) == (None, ["param 'word' does not match .*"])
    assert command.render({"word": "hello"}) == (["echo", "hello"], [])
