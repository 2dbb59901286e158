"""The audit service: an append-only, hash-chained log of every ``audit.#`` event.

Other services only publish (see :class:`shared.messaging.AuditTrail`); this service
is the single writer of the log, so the chain has exactly one order.
"""
