"""Benchmarks: ``python benchmarks/overhead.py`` (``make bench``)."""
