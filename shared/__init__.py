"""Code every Coffer service may import: contracts, errors, drivers, storage.

Services import this package and never each other (``tests/test_boundaries.py``).
"""
