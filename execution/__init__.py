"""The action catalog, risk policy, adapters and verification.

- `catalog`: every action a plan may name (`ActionSpec`: params schema, base risk, floor tier, blast radius,
  reversibility), `Catalog.validate_step`; FORBIDDEN actions are listed only to be named and refused.
- `diagnostics`: the read-only diagnostic commands (argv templates) that may run; nothing else does.
- `risk`: `assess_risk(RiskContext, RiskPolicy) -> bus.events.RiskAssessment`, pure, with a breakdown per factor.
- `results`: `ActionResult`, what every adapter returns; expected failures are results, never exceptions.
- `argv_runner`: one command as an argv list under a timeout, output bounded (no shell, ever).
- `adapters`: the `ActionAdapter` protocol and one adapter per action: restart_process (on the local
  `ProcessSupervisor`), scale and rollback_deploy (on a `DeploymentPlatform`, with a local one), clear_disk,
  flush_connection_pool (HTTP), run_allowlisted_script.
- `executor`: `ActionExecutor`: refuses what the catalog does not allow, runs the adapter, bounded retries with
  backoff, rollbacks step by step.
"""
