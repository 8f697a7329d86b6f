"""Benchmarks for spark-ext.

Each benchmark is a module run with ``python -m bench.<name>`` (or a ``make bench-*``
target); shared timing, statistics and reporting helpers live in :mod:`bench.common`.
Results are printed as tables and written as JSON under ``bench/results/`` (git-ignored).
See ``docs/benchmarks.md`` for the commands and the measured numbers.
"""
