"""``make bench``: Coffer against restic on a real directory tree (see docs/benchmarks.md)."""
