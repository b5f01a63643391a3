"""Example programs and task modules; run them from the repository root."""
