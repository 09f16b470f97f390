"""The composition root: the opswarm CLI, the local stack, set-up and benchmarks."""
