"""Scenarios: real faults injected into real local target processes, handled by the live swarm."""
