"""The monitoring agent: alerts in, incidents out (opened, updated, resolved), exactly once."""
