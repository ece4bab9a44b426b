"""Benchmarks: `make bench`. Each measures against a baseline taken in the same run."""
