"""The incident state machine: every transition outside the lifecycle is refused with a reason."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from bus.incident_states import ACTIVE, TERMINAL, TRANSITIONS, IncidentState, check_transition

S = IncidentState
ALL_PAIRS = list(itertools.product(IncidentState, IncidentState))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]


def test_the_lifecycle_has_the_expected_shape() -> None:
    assert TERMINAL == {S.CLOSED}
    assert len(LEGAL) == 22
    assert len(ILLEGAL) == len(ALL_PAIRS) - 22


@pytest.mark.parametrize(("current", "target"), ILLEGAL, ids=lambda s: str(s))
def test_every_illegal_transition_is_refused_with_a_reason(current: IncidentState, target: IncidentState) -> None:
    check = check_transition(current, target)
    assert not check.allowed
    assert check.reason.startswith(f"{current} → {target}: ")
    assert len(check.reason) > len(f"{current} → {target}: ") + 5


@pytest.mark.parametrize(("current", "target"), LEGAL, ids=lambda s: str(s))
def test_every_lifecycle_step_is_allowed(current: IncidentState, target: IncidentState) -> None:
    check = check_transition(current, target)
    assert check.allowed
    assert TRANSITIONS[current][target] in check.reason


@pytest.mark.parametrize(
    ("current", "target", "phrase"),
    [
        (S.NEW, S.EXECUTING, "without a diagnosis"),
        (S.DIAGNOSING, S.EXECUTING, "without an approved plan"),
        (S.EXECUTING, S.RESOLVED, "must pass verification"),
        (S.AWAITING_APPROVAL, S.VERIFYING, "must execute before"),
        (S.CLOSED, S.DIAGNOSING, "is final"),
        (S.CLOSED, S.NEW, "is final"),
        (S.VERIFYING, S.VERIFYING, "already"),
        (S.RESOLVED, S.EXECUTING, "not a step"),
    ],
)
def test_refusals_explain_themselves(current: IncidentState, target: IncidentState, phrase: str) -> None:
    assert phrase in check_transition(current, target).reason


@pytest.mark.parametrize("state", list(IncidentState))
def test_every_state_is_reachable_from_new_and_can_reach_closed(state: IncidentState) -> None:
    assert state in _reachable(S.NEW)
    assert S.CLOSED in _reachable(state)


@pytest.mark.parametrize("state", sorted(ACTIVE))
def test_every_active_state_can_be_parked_for_a_human(state: IncidentState) -> None:
    assert check_transition(state, S.PARKED).allowed


def test_execution_is_only_entered_after_a_plan_or_an_approval() -> None:
    assert {a for a, b in LEGAL if b is S.EXECUTING} == {S.PLANNED, S.AWAITING_APPROVAL}
    assert {a for a, b in LEGAL if b is S.VERIFYING} == {S.EXECUTING}


def _reachable(start: IncidentState) -> set[IncidentState]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
