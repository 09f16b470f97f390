"""The coordination agent: the only writer of incident state — risk, arbitration, approvals, escalations."""
