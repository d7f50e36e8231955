"""Benchmarks: each prints its own figures and ratios against a baseline run in the same process."""
