"""scanstream's benchmarks: `python -m bench [--quick] [--only NAME]` (or `just bench`).

Every figure is printed beside a baseline measured in the same run, on the same private
Redis, with real subprocesses. See docs/benchmarks.md.
"""
