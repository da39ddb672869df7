"""Reproducible benchmarks; results and commands in bench/README.md."""
