"""Supervision of agent processes, heartbeats, durable timers, leases and rate limits (Redis)."""
