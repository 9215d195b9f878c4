"""Benchmarks: scripts that print numbers and write plots. Never timed assertions in tests."""
