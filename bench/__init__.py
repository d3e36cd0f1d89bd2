"""Benchmarks of hostlife on real Temporal servers (issue 10): `make bench`, `python -m bench`.

Each module starts its own dev server (or time-skipping server), writes
`bench/results/<name>.json` and prints a table; docs/BENCHMARKS.md reads them.
"""
