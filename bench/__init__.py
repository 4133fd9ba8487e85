"""Benchmarks and the chaos suite: whole twoway processes, measured and abused."""
