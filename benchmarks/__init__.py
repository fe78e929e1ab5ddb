"""Benchmarks: scripts that print figures measured side by side in one run (never pass/fail tests)."""
