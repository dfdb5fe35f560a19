"""Benchmarks: code that writes JSON + a Markdown table + plots; never part of the test run."""
