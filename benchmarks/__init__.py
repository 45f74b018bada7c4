"""Benchmarks: pyconv against its peers, in one process, at equal thread counts."""
