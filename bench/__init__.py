"""Benchmark scripts; see BENCHMARKS.md and bench/run_all."""
