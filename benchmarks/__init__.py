"""Benchmark scripts; `python -m benchmarks <command>` runs those listed in benchmarks/__main__.py."""
