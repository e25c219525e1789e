"""Synthetic scenes with known masks, for tests, training, the benchmarks and the convert gate.

Not part of the device runtime: nothing in ``edgesam.runtime`` imports it."""
