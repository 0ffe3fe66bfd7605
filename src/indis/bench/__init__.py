"""Benchmarks (`indis bench ...`): measurements that are too long for the timed test suite."""
