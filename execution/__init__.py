"""The action catalog, risk policy, adapters and verification."""
