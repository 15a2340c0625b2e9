"""Benchmarks for Quiver (run from the repository root, e.g. `python -m bench.foundation`)."""
