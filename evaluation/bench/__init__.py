"""Benchmarks: each of our techniques beside the peer library's same method (pytest-benchmark).

``reportgen bench`` runs them at the issue's size and saves the JSON; ``pytest`` runs them
once each at a small size (``--benchmark-disable``), as tests that they still run.
"""
