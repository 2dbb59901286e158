"""Source drivers: how a kind of source is read into a backup and restored from one.

Drivers register under the entry-point group ``coffer.sources``; see
:mod:`shared.sources.registry` and the interface in :mod:`shared.sources.base`.
"""
