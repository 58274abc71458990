"""Benchmarks (``make bench-selection``...)."""
