"""Benchmarks and the synthetic photo generator the tests and benchmarks share."""
