"""Benchmarks and the synthetic data renderer. Never imported by the product."""
