"""Benchmarks of the gateway against a naive baseline, on the same machine."""
