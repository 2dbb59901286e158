"""`coffer`: the command-line client of the gateway's HTTP API.

It talks HTTP only and imports nothing from ``services`` or ``shared``, so it can be
installed and run on any admin's machine without the platform's dependencies.
"""
