"""The append-only, hash-chained audit log, on SQLAlchemy Core.

Each record stores the canonical JSON of its event and
``hash = sha256(prev_hash + "\\n" + canonical_json(event))``, the first record chaining
from 64 zeros. Editing, deleting or reordering a stored record therefore breaks the
chain at that point, and :meth:`AuditLog.verify` names the first record where it
breaks. What a chain alone cannot catch: someone with write access who rewrites every
record after the change *and* the head row. Closing that needs the head anchored
outside this database (published, signed, or written to WORM storage); that is a
separate, later step.

The order of the chain is the order of commits, so appends are serialized:

- PostgreSQL: the one-row ``audit_chain_head`` table is locked with
  ``SELECT ... FOR UPDATE`` inside the append transaction, which serializes every
  audit service instance writing to the same database.
- SQLite: the append runs in ``BEGIN IMMEDIATE``, which takes the database write lock
  up front (other processes wait up to the 30 s busy timeout). Inside one process an
  eventlet semaphore serializes appends as well: SQLite's busy wait is a blocking C
  call, so a green thread waiting in it would stall the very hub the lock holder needs
  to finish.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eventlet
import eventlet.semaphore
import sqlalchemy as sa
from nameko.extensions import DependencyProvider

from services.audit.canonical import (
    DERIVED_COLUMNS,
    GENESIS_HASH,
    canonical_json,
    chain_hash,
    derive_columns,
)
from services.audit.schemas import parse_query
from shared.config import settings
from shared.database import make_engine
from shared.errors import InvalidMessage, ServiceUnavailable

log = logging.getLogger(__name__)

#: Version of the tables below. The audit log is append-only and its tables only ever
#: gain columns or indexes, so ``metadata.create_all`` is enough to set it up (no
#: Alembic history as in the catalog); the version is kept in the head row so that a
#: future layout change can refuse to start on, or deliberately upgrade, an old one.
STORE_SCHEMA_VERSION = 1

#: Rows read per round trip by :meth:`AuditLog.verify`: memory stays bounded however
#: long the chain is.
VERIFY_BATCH_SIZE = 500

#: Execution option read by the SQLite ``begin`` hook below.
_SQLITE_BEGIN = "coffer_sqlite_begin"

#: Key of the PostgreSQL advisory lock that serializes schema creation between
#: instances starting at the same moment (``CREATE TABLE IF NOT EXISTS`` races).
_SCHEMA_LOCK_KEY = 0x0C0FFE_A0D17

metadata = sa.MetaData()

audit_records = sa.Table(
    "audit_records",
    metadata,
    # Assigned by the append from the locked head row, not by the database: a sequence
    # could hand out numbers in an order different from the commit (= chain) order.
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.String(128), nullable=False, unique=True),
    # The event's own timestamp, in UTC without zone (comparable on SQLite too).
    sa.Column("at", sa.DateTime(timezone=False), nullable=False),
    sa.Column("tenant", sa.String(255), nullable=True),
    sa.Column("action", sa.String(255), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("actor_type", sa.Text, nullable=True),
    sa.Column("actor_id", sa.Text, nullable=True),
    sa.Column("resource_type", sa.Text, nullable=True),
    sa.Column("resource_id", sa.Text, nullable=True),
    # Unbounded (see AuditEventRecord), hence a hash index on PostgreSQL: a B-tree
    # entry is limited to about 2.7 kB, a hash entry is not.
    sa.Column("request_id", sa.Text, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # Queries are newest-first by seq within these filters.
    sa.Index("ix_audit_records_tenant_seq", "tenant", "seq"),
    sa.Index("ix_audit_records_action", "action"),
    sa.Index("ix_audit_records_at", "at"),
    sa.Index("ix_audit_records_request_id", "request_id", postgresql_using="hash"),
)

audit_chain_head = sa.Table(
    "audit_chain_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.CheckConstraint("id = 1", name="ck_audit_chain_head_single_row"),
)


class AuditLogCorrupt(RuntimeError):
    """The stored log is in a state this service must not write on top of."""


class DuplicateEventConflict(InvalidMessage):
    """An event reuses the id of a stored event but says something else.

    A redelivery carries the same body; a different body under the same id is either
    a publisher bug or a forgery, and either way it must not vanish silently: raising
    an :class:`InvalidMessage` sends it to the dead-letter queue for a human.
    """

    code = "duplicate_event_conflict"


# -- engine ---------------------------------------------------------------------------


def create_audit_engine(url: str) -> sa.Engine:
    """The shared engine set-up (pg8000 for PostgreSQL, WAL and a busy timeout for
    SQLite), plus what the chain needs from SQLite.

    pysqlite would open transactions itself, lazily and DEFERRED, so that two appenders
    could both read the same head before either writes. It is told to keep out, and
    the ``begin`` hook emits ``BEGIN IMMEDIATE`` for appends (``BEGIN`` for reads).
    """
    engine = make_engine(url)
    if engine.dialect.name != "sqlite":
        return engine

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # An event is acked once committed; FULL makes "committed" survive power loss.
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _is_postgres(engine: sa.Engine) -> bool:
    return engine.dialect.name == "postgresql"


_sqlite_write_locks: dict[str, eventlet.semaphore.Semaphore] = {}


def _process_write_lock(engine: sa.Engine) -> contextlib.AbstractContextManager[Any]:
    """The in-process append lock: none for PostgreSQL (its row lock waits on a green
    socket), one per SQLite file, shared by every engine on that file in this process
    (two containers in one runner, or a test opening the log twice)."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    database = engine.url.database or ":memory:"
    key = database if database == ":memory:" else str(Path(database).resolve())
    return _sqlite_write_locks.setdefault(key, eventlet.semaphore.Semaphore(1))


def ensure_schema(engine: sa.Engine) -> None:
    """Create the tables and the genesis head row if missing; refuse a damaged log.

    A missing head row over existing records is not repaired: starting a fresh chain
    there would silently fork the log.
    """
    with engine.connect() as conn:
        conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            if _is_postgres(engine):
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
            metadata.create_all(conn)
            head = conn.execute(
                sa.select(audit_chain_head.c.schema_version).where(audit_chain_head.c.id == 1)
            ).first()
            if head is None:
                has_records = conn.execute(sa.select(audit_records.c.seq).limit(1)).first()
                if has_records is not None:
                    raise AuditLogCorrupt(
                        "audit_chain_head is missing but audit_records is not empty"
                    )
                conn.execute(
                    sa.insert(audit_chain_head).values(
                        id=1, seq=0, hash=GENESIS_HASH, schema_version=STORE_SCHEMA_VERSION
                    )
                )
            elif head.schema_version != STORE_SCHEMA_VERSION:
                raise AuditLogCorrupt(
                    f"audit log schema version {head.schema_version} is not the supported "
                    f"{STORE_SCHEMA_VERSION}"
                )


# -- the log --------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendResult:
    seq: int
    hash: str
    duplicate: bool


class AuditLog:
    """The log's whole interface: append, query, verify, ping.

    One instance per process is shared by all workers; it holds no per-call state.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._write_lock = _process_write_lock(engine)

    @classmethod
    def open(cls, url: str) -> AuditLog:
        engine = create_audit_engine(url)
        try:
            ensure_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
            with conn.begin():
                yield conn

    def append(self, event: Mapping[str, Any]) -> AppendResult:
        """Add one validated event at the end of the chain; returns once committed.

        The same event delivered again (AMQP is at-least-once) is recognised by its id
        and not stored twice.
        """
        body = canonical_json(event)
        columns = derive_columns(event)
        try:
            with self._write() as conn:
                head = conn.execute(
                    sa.select(audit_chain_head.c.seq, audit_chain_head.c.hash)
                    .where(audit_chain_head.c.id == 1)
                    .with_for_update()
                ).one()
                existing = conn.execute(
                    sa.select(
                        audit_records.c.seq, audit_records.c.hash, audit_records.c.body
                    ).where(audit_records.c.event_id == columns["event_id"])
                ).first()
                if existing is not None:
                    if existing.body != body:
                        raise DuplicateEventConflict(
                            f"event {columns['event_id']} is already stored with other content",
                            {"id": [f"already stored as seq {existing.seq}"]},
                        )
                    return AppendResult(seq=existing.seq, hash=existing.hash, duplicate=True)
                seq = head.seq + 1
                digest = chain_hash(head.hash, body)
                conn.execute(
                    sa.insert(audit_records).values(
                        seq=seq, body=body, prev_hash=head.hash, hash=digest, **columns
                    )
                )
                conn.execute(
                    sa.update(audit_chain_head)
                    .where(audit_chain_head.c.id == 1)
                    .values(seq=seq, hash=digest)
                )
        except sa.exc.DataError as exc:
            # The database refuses the value itself (e.g. too long for its column):
            # retrying can never succeed, so let it be dead-lettered, not requeued.
            raise InvalidMessage(
                "the audit event cannot be stored", {"body": [str(exc.orig)]}
            ) from exc
        return AppendResult(seq=seq, hash=digest, duplicate=False)

    def query(
        self, filters: Mapping[str, Any] | None = None, page: int = 1, per_page: int = 50
    ) -> dict[str, Any]:
        """One page of matching records, newest first (by seq, which never ties)."""
        criteria = parse_query(filters, page, per_page)
        clauses = _where(criteria.filters)
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(audit_records).where(*clauses)
            ).scalar_one()
            rows = conn.execute(
                sa.select(
                    audit_records.c.seq,
                    audit_records.c.body,
                    audit_records.c.prev_hash,
                    audit_records.c.hash,
                )
                .where(*clauses)
                .order_by(audit_records.c.seq.desc())
                .limit(criteria.per_page)
                .offset((criteria.page - 1) * criteria.per_page)
            ).all()
        items = [
            {**json.loads(row.body), "seq": row.seq, "prev_hash": row.prev_hash, "hash": row.hash}
            for row in rows
        ]
        return {
            "items": items,
            "total": total,
            "page": criteria.page,
            "per_page": criteria.per_page,
        }

    def verify(
        self, tenant: str | None = None, batch_size: int = VERIFY_BATCH_SIZE
    ) -> dict[str, Any]:
        """Recompute the whole chain in seq order and report the first break.

        Rows are read in keyset batches (``seq > last ORDER BY seq LIMIT n``), so memory
        is bounded, no long transaction or cursor is held open on the server, and the
        greenlet yields between batches (SQLite reads would otherwise block the hub and
        with it AMQP heartbeats). Records appended while this runs are verified too.

        With ``tenant`` the whole chain is still walked, because a tenant's records
        are linked through everybody else's; only ``records`` and ``head`` are
        narrowed to that tenant. ``records`` counts records verified before any break;
        ``first_bad`` is the seq of the first stored record that fails a check.
        """
        with self.engine.connect() as conn:
            head = conn.execute(
                sa.select(audit_chain_head.c.seq, audit_chain_head.c.hash).where(
                    audit_chain_head.c.id == 1
                )
            ).one()

        count = 0
        tenant_head: str | None = None
        prev_hash = GENESIS_HASH
        last_seq = 0

        def result(first_bad: int | None = None, reason: str | None = None) -> dict[str, Any]:
            return {
                "ok": first_bad is None and reason is None,
                "records": count,
                "head": tenant_head,
                "first_bad": first_bad,
                "reason": reason,
            }

        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(audit_records)
                    .where(audit_records.c.seq > last_seq)
                    .order_by(audit_records.c.seq)
                    .limit(batch_size)
                ).all()
            if not rows:
                break
            for row in rows:
                problem = _check_record(row, last_seq + 1, prev_hash)
                if problem is None and row.seq == head.seq and row.hash != head.hash:
                    problem = "does not match the chain head"
                if problem is not None:
                    return result(row.seq, f"seq {row.seq}: {problem}")
                prev_hash = row.hash
                last_seq = row.seq
                if tenant is None or row.tenant == tenant:
                    count += 1
                    tenant_head = row.hash
            eventlet.sleep(0)

        if last_seq < head.seq:
            return result(
                last_seq + 1,
                f"records {last_seq + 1}..{head.seq} are missing "
                f"(the chain head is at seq {head.seq})",
            )
        return result()

    def ping(self) -> None:
        """Raise :class:`ServiceUnavailable` unless the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.select(audit_chain_head.c.seq).where(audit_chain_head.c.id == 1))
        except sa.exc.SQLAlchemyError as exc:
            raise ServiceUnavailable(
                "the audit database is unreachable", {"database": [str(exc)]}
            ) from exc


def _check_record(row: Any, expected_seq: int, prev_hash: str) -> str | None:
    """Why ``row`` breaks the chain, or None.

    Covers the three tamperings that matter: an edited body (hash mismatch), a
    deleted record (seq gap) and a reordered one (its ``prev_hash`` no longer names
    the record before it). The indexed columns must also agree with the body, or a
    query by tenant could be made to hide records whose hash is intact.
    """
    if row.seq != expected_seq:
        if row.seq > expected_seq:
            missing = (
                f"seq {expected_seq}"
                if row.seq == expected_seq + 1
                else f"seqs {expected_seq}..{row.seq - 1}"
            )
            return f"{missing} missing before it"
        return f"out of order (expected seq {expected_seq})"
    if row.prev_hash != prev_hash:
        return "prev_hash does not match the hash of the record before it"
    if chain_hash(row.prev_hash, row.body) != row.hash:
        return "hash does not match its body"
    try:
        event = json.loads(row.body)
        if not isinstance(event, dict) or canonical_json(event) != row.body:
            return "body is not canonical JSON of an object"
        derived = derive_columns(event)
    except (ValueError, KeyError, TypeError):
        return "body is not a readable audit event"
    for name in DERIVED_COLUMNS:
        if getattr(row, name) != derived[name]:
            return f"column {name} does not match the body"
    return None


def _where(filters: Mapping[str, Any]) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    c = audit_records.c
    for name in ("tenant", "outcome", "actor_id", "resource_type", "resource_id", "request_id"):
        if name in filters:
            value = filters[name]
            clauses.append(c[name].is_(None) if value is None else c[name] == value)
    action = filters.get("action")
    if action is not None:
        if action.endswith("*"):
            prefix = action[:-1]
            if prefix:
                clauses.append(c.action.startswith(prefix, autoescape=True))
        else:
            clauses.append(c.action == action)
    if filters.get("since") is not None:
        clauses.append(c.at >= filters["since"])
    if filters.get("until") is not None:
        clauses.append(c.at < filters["until"])
    return clauses


# -- nameko ---------------------------------------------------------------------------


class AuditLogStore(DependencyProvider):
    """Gives workers the process's :class:`AuditLog`.

    The engine (and its connection pool) is built once in ``setup`` and shared by
    all workers; the schema is created there too, so a service that cannot reach its
    database fails at start instead of dead-ending every message.
    """

    log: AuditLog | None = None

    def setup(self) -> None:
        url = settings(self.container.config).audit_database_url
        self.log = AuditLog.open(url)
        log.info("audit log at %s", sa.engine.make_url(url).render_as_string(hide_password=True))

    def stop(self) -> None:
        if self.log is not None:
            self.log.dispose()
            self.log = None

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx: Any) -> AuditLog:
        assert self.log is not None, "AuditLogStore used before setup()"
        return self.log
