"""Benchmarks of multinode against the raw sqlite3 floor and its peers.

Run ``python -m benchmarks`` from the repository root; see README.md here.
"""
