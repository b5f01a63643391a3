"""The node's pure core: what to run and what a batch's outcome is, given
deliveries, chunk results and the time. No Redis, no threads, no processes, no
clock of its own (tests/test_pure_core.py checks every module here)."""
