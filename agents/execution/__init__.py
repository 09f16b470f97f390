"""The execution agent: approved actions in, each run at most once, executed/failed out; then verification.

- `settings`: `ExecutionSettings`.
- `run_once`: work under an idempotency key at most once, its outcome event recorded and replayed.
- `action_runs`: `ActionRuns.answer(ActionApproved)` -> ActionExecuted / ActionFailed (rollback on failure),
  and the verification timer of an executed approval that carries `verify`.
- `verification_loop`: due timers -> verify query -> VerificationPassed, or rollback + VerificationFailed.
- `service`: the wiring (`execution_agent`, `run_execution`); `__main__`: `python -m agents.execution`.
"""
