"""The ``postgres`` driver: native ``pg_dump`` custom-format backups, restored with
``pg_restore`` and ``psql``.

Backup
    ``pg_dump -Fc`` runs as a child process and its stdout is handed to the writer as
    the content of one entry, ``dump.pgcustom`` (size ``UNKNOWN_SIZE``): the dump is
    never staged in a temporary file and never held in memory. The dump is taken
    uncompressed (``-Z0``) on purpose: the repository chunks, deduplicates and
    compresses, and a gzip stream would make every backup look entirely new to it.
    The entry's ``meta`` records the server version, the schemas dumped and the
    relations found just before the dump (what a restore may conflict with).

Restore
    One pass over the backup, one transaction in the target::

        backup reader --> pg_restore -f - -L <list> --> relay --> psql -1 ... -d <target>

    1. The head of the dump is fed to ``pg_restore --list``, which exits as soon as it
       has read the archive's table of contents (TOC); what was fed is kept in memory
       (the TOC plus at most a chunk or two, never the table data) and replayed to the
       real restore. Knowing the TOC before anything is written is what makes the
       merge conflict check, selective and renamed restores, and dry-run possible in
       a single streaming pass.
    2. ``pg_restore`` turns the archive into an SQL script; a relay thread copies the
       script into ``psql``, after a prelude of our own. Everything runs in ONE
       transaction opened by the prelude (``BEGIN``), so a failure anywhere (an object
       that already exists, a broken backup, a cancelled job, this process dying)
       rolls the whole restore back. ``psql`` runs with ``ON_ERROR_STOP``.
    3. The transaction is committed only after the backup reader has been read to its
       end (which is when it reports an integrity failure). The last chunk of the dump
       is held back until then: ``pg_restore`` cannot finish, so cannot emit its
       ``COMMIT``, before the backup is known to be intact.

    Modes:

    * ``merge`` adds the dump's objects to the target database. Relations of the dump
      that already exist in the target are refused up front with
      :class:`TargetNotEmpty` (nothing is written); a schema the dump creates that
      already exists is reused. Any other clash (a type, a function) fails in ``psql``
      and its error is reported verbatim; the transaction is rolled back.
    * ``replace`` makes the restored schemas exactly the dump: the prelude drops the
      target schemas in scope (``DROP SCHEMA ... CASCADE``; schemas the dump does not
      create itself, such as ``public`` in a whole-database dump, are re-created with
      their owner, grants and comment) in the same transaction as the restore. In
      scope are the schemas being restored, and, for a whole-database restore, every
      user schema of the target (a schema created after the backup is removed too).
    * ``dry-run`` reads the TOC, connects to the target if it can, and reports the
      objects the dump holds, which tables would be created or replaced, which
      conflict (merge) and which extra relations replace would drop. Nothing is
      written anywhere.

    ``--no-owner --no-privileges`` always: a restore must work on another server
    whose roles differ; the restoring user owns what it restores.

Target ``schemas``
    * omitted: everything in the dump, under its original schema names;
    * a subset of the dump's schemas: only those (objects outside any schema, such as
      extensions and large objects, are then skipped);
    * one name that is not in the dump, for a dump of exactly one schema: a restore
      into another schema name. ``pg_restore`` cannot rename a schema, so within the
      same transaction the prelude moves an existing schema of the dump's name aside
      (and the target schema, if it exists, into its place), the script restores
      under the dump's name, and the postlude renames the result to the target name
      and puts the moved schema back. Other sessions never see the intermediate
      names. Caveat: function bodies are text, so a function body that names its own
      schema explicitly still names the original one after the rename (views,
      defaults, constraints and foreign keys follow the rename: they are bound by
      OID).

Secrets: the password only ever travels in ``PGPASSWORD`` in the children's
environment (never on a command line), and is scrubbed from any tool output that
ends up in an error.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, cast

import sqlalchemy as sa
from marshmallow import RAISE, Schema, ValidationError, fields, validates
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from shared.errors import (
    CofferError,
    Conflict,
    IntegrityError,
    InvalidSourceConfig,
    SourceUnavailable,
    TargetNotEmpty,
    Unsupported,
    ValidationFailed,
)
from shared.repository import BackupReader, BackupWriter, Entry
from shared.repository.base import UNKNOWN_SIZE
from shared.sources.base import REDACTED, RESTORE_MODES, Progress, RestoreOptions, SourceDriver

#: The one entry a backup holds.
DUMP_PATH = "dump.pgcustom"
DUMP_FORMAT = "pg_dump-custom"
#: pg_dump compression level: none, so the repository's dedup and zstd see raw rows.
DUMP_COMPRESSION = 0
#: Copy granularity between the backup stream and the tools.
CHUNK = 1024 * 1024
#: Seconds to wait for a connection (pg8000 and libpq's PGCONNECT_TIMEOUT).
CONNECT_TIMEOUT = 10
#: The head of a dump kept in memory while pg_restore reads its TOC.
TOC_LIMIT = 256 * 1024 * 1024
#: Bytes of a tool's stderr kept for the error report (its beginning: with
#: ON_ERROR_STOP the first error is the one that matters).
STDERR_LIMIT = 64 * 1024
#: Longest list in a report or in the entry meta; totals go beside it.
LIST_CAP = 1000
META_RELATIONS_CAP = 10_000
#: Stats count rows exactly (``count(*)``) when the tables are this few and small;
#: otherwise they report the planner's live-tuple estimate.
EXACT_COUNT_MAX_TABLES = 50
EXACT_COUNT_MAX_BYTES = 256 * 1024 * 1024

_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: Relation kinds whose names can clash on restore: table, partitioned table, view,
#: materialized view, sequence, foreign table.
_RELKINDS = ("r", "p", "v", "m", "S", "f")
_RELKIND_NAMES = {
    "r": "table",
    "p": "table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "f": "foreign table",
}
#: TOC descriptions of relations (what ``pg_restore --list`` prints).
_TOC_RELATIONS = ("TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE")
#: Every TOC description pg_dump 9.x-17 writes, longest first, so that the list
#: parser can tell "TABLE DATA" from "TABLE".
_TOC_DESCS = sorted(
    (
        "ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOB METADATA", "BLOBS", "CAST",
        "CHECK CONSTRAINT", "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION",
        "DATABASE", "DATABASE PROPERTIES", "DEFAULT", "DEFAULT ACL", "DOMAIN",
        "ENCODING", "EVENT TRIGGER", "EXTENSION", "FK CONSTRAINT",
        "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE", "FUNCTION", "INDEX",
        "INDEX ATTACH", "LARGE OBJECT", "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA",
        "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "POLICY", "PROCEDURAL LANGUAGE",
        "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH", "SECURITY LABEL", "SEQUENCE",
        "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS",
        "STATISTICS DATA", "STDSTRINGS", "SUBSCRIPTION", "SUBSCRIPTION TABLE", "TABLE",
        "TABLE ATTACH", "TABLE DATA", "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE",
        "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING", "VIEW",
    ),
    key=len,
    reverse=True,
)  # fmt: skip
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
#: libpq and server messages that mean "could not get a session" rather than
#: "the session failed": those are SourceUnavailable.
_CONNECT_FAILURE = re.compile(
    r"connection to server .* failed|could not connect to server|could not translate host"
    r"|no pg_hba\.conf entry|authentication failed|fe_sendauth|timeout expired"
    r"|database \".*\" does not exist|role \".*\" does not exist"
    r"|Connection refused|server closed the connection unexpectedly",
    re.IGNORECASE,
)
_SYSTEM_SCHEMAS = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"


# -- config ------------------------------------------------------------------------


def _parse_url(value: str) -> URL:
    """The URL, or ValidationError with a message that never repeats the URL
    (it holds the password)."""
    if "\x00" in value:
        raise ValidationError("must not contain NUL")
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValidationError(
            "not a database URL: expected postgresql://user:password@host:port/database"
        ) from None
    driver = url.drivername.split("+", 1)[0]
    if driver not in ("postgresql", "postgres"):
        raise ValidationError("must be a postgresql:// URL")
    if not url.host:
        raise ValidationError("must name a host: postgresql://user@host:port/database")
    if not url.database:
        raise ValidationError("must name a database: postgresql://user@host:port/database")
    unknown = sorted(set(url.query) - {"sslmode"})
    if unknown:
        raise ValidationError(f"unsupported URL option(s): {', '.join(unknown)}")
    sslmode = url.query.get("sslmode")
    if sslmode is not None and (not isinstance(sslmode, str) or sslmode not in _SSLMODES):
        raise ValidationError(f"sslmode must be one of {', '.join(_SSLMODES)}")
    return url


def _validate_url(value: str) -> None:
    _parse_url(value)


def _validate_schema_name(value: str) -> None:
    if not value:
        raise ValidationError("a schema name must not be empty")
    if "\x00" in value:
        raise ValidationError("must not contain NUL")
    if len(value.encode("utf-8")) > 63:
        raise ValidationError("PostgreSQL names are at most 63 bytes")


class PostgresConfigSchema(Schema):
    """``{url, schemas?}``; ``schemas`` omitted means the whole database."""

    class Meta:
        unknown = RAISE

    url = fields.String(required=True, validate=_validate_url)
    schemas = fields.List(fields.String(validate=_validate_schema_name))

    @validates("schemas")
    def _schemas(self, value: list[str], **_kwargs: Any) -> None:
        if not value:
            raise ValidationError("name at least one schema, or omit schemas for all")
        if len(set(value)) != len(value):
            raise ValidationError("schemas must not repeat")


# -- connections -------------------------------------------------------------------


@dataclass(frozen=True)
class _Conn:
    """Where a database is, split into the parts each client needs."""

    host: str
    port: int
    user: str | None
    password: str | None
    database: str
    sslmode: str | None

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> _Conn:
        try:
            url = _parse_url(cfg["url"])
        except ValidationError as exc:
            raise InvalidSourceConfig(
                "invalid postgres config", {"config": {"url": exc.messages}}
            ) from None
        sslmode = url.query.get("sslmode")
        return cls(
            host=str(url.host),
            port=int(url.port or 5432),
            user=url.username,
            password=url.password if url.password else None,
            database=str(url.database),
            sslmode=sslmode if isinstance(sslmode, str) else None,
        )

    def describe(self) -> str:
        """For messages: never the password."""
        who = f"{self.user}@" if self.user else ""
        return f"{who}{self.host}:{self.port}/{self.database}"

    def where(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "database": self.database}

    def scrub(self, text: str) -> str:
        """libpq never prints the password, but an error text is stored and shown:
        make sure of it."""
        if self.password and len(self.password) >= 3:
            text = text.replace(self.password, REDACTED)
        return text

    def tool_env(self) -> dict[str, str]:
        """Environment for pg_dump / pg_restore / psql.

        Inherited ``PG*`` variables are dropped so that nothing from the worker's
        environment (a PGSERVICE, PGOPTIONS, another PGPASSWORD) changes where or how
        the tools connect; the connection is described by variables only, so no
        argument (visible in ``ps``) carries any of it.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "LC_ALL"}
        env.update(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGDATABASE=self.database,
            PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
            PGAPPNAME="coffer",
            # Client-side messages in English, so that failures can be classified.
            LC_MESSAGES="C",
        )
        if self.user:
            env["PGUSER"] = self.user
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        return env

    def _ssl_context(self) -> ssl.SSLContext | None:
        # pg8000 has no "prefer"/"allow": those, like no sslmode, connect in clear.
        if self.sslmode in ("require", "verify-ca", "verify-full"):
            context = ssl.create_default_context()
            if self.sslmode != "verify-full":
                context.check_hostname = False
            if self.sslmode == "require":
                context.verify_mode = ssl.CERT_NONE
            return context
        return None

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A pg8000 session (pure Python: green under eventlet, where check and
        check_target run), with failures to connect turned into SourceUnavailable."""
        url = URL.create(
            "postgresql+pg8000",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.database,
        )
        connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT, "application_name": "coffer"}
        context = self._ssl_context()
        if context is not None:
            connect_args["ssl_context"] = context
        engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        try:
            try:
                conn = engine.connect()
            except (SQLAlchemyError, OSError) as exc:
                raise self.unavailable(_db_error_text(exc)) from None
            try:
                yield conn
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
        finally:
            engine.dispose()

    def unavailable(self, reason: str) -> SourceUnavailable:
        reason = self.scrub(reason)
        return SourceUnavailable(
            f"cannot connect to PostgreSQL {self.describe()}: {reason}",
            {**self.where(), "reason": reason},
        )


def _db_error_text(exc: BaseException) -> str:
    """The server's or driver's own words, without SQLAlchemy's decoration."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], dict):  # pg8000 DatabaseError: the server's fields
        fields_ = args[0]
        return str(fields_.get("M") or fields_)
    text = str(args[0]) if args else str(orig)
    return text or type(orig).__name__


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    # The prelude sets standard_conforming_strings = on: backslashes are plain.
    return "'" + text.replace("'", "''") + "'"


def _pattern(name: str) -> str:
    """A pg_dump ``--schema`` pattern matching exactly ``name`` (quoted: case is
    kept and ``*``/``?`` are literal)."""
    return _ident(name)


# -- catalog queries ---------------------------------------------------------------


@dataclass
class _SchemaInfo:
    name: str
    owner: str
    comment: str | None
    #: ``GRANT`` statements that re-create its ACL (without the owner's own rights).
    grants: list[str]
    #: Created by an extension: never dropped by replace.
    extension: bool


@dataclass
class _Inventory:
    """What a database holds, as far as a restore is concerned."""

    server_version: str
    schemas: dict[str, _SchemaInfo]
    #: (schema, name) -> relkind, for the schemas asked about.
    relations: dict[tuple[str, str], str]


def _inventory(conn: sa.Connection, schemas: Iterable[str] | None) -> _Inventory:
    """Schemas (all user schemas) and the relations of ``schemas`` (None: of all)."""
    version = str(conn.execute(sa.text("SHOW server_version")).scalar())
    rows = conn.execute(
        sa.text(
            f"""
            SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner),
                   pg_catalog.obj_description(n.oid, 'pg_namespace'),
                   EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                           WHERE d.classid = 'pg_catalog.pg_namespace'::regclass
                             AND d.objid = n.oid AND d.deptype = 'e'),
                   ARRAY(SELECT pg_catalog.format('GRANT %s ON SCHEMA %I TO %s%s',
                                    a.privilege_type, n.nspname,
                                    CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                         ELSE pg_catalog.quote_ident(
                                              pg_catalog.pg_get_userbyid(a.grantee)) END,
                                    CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION'
                                         ELSE '' END)
                         FROM pg_catalog.aclexplode(n.nspacl) a
                         WHERE a.grantee <> n.nspowner
                         ORDER BY 1)
            FROM pg_catalog.pg_namespace n
            WHERE {_SYSTEM_SCHEMAS}
            ORDER BY 1
            """
        )
    ).all()
    infos = {
        row[0]: _SchemaInfo(row[0], row[1], row[2], list(row[4] or []), bool(row[3]))
        for row in rows
    }
    wanted = sorted(infos) if schemas is None else sorted(set(schemas))
    relations: dict[tuple[str, str], str] = {}
    if wanted:
        for nsp, rel, kind in conn.execute(
            sa.text(
                """
                SELECT n.nspname, c.relname, c.relkind::text
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind::text = ANY(:kinds) AND n.nspname = ANY(:schemas)
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                  WHERE d.classid = 'pg_catalog.pg_class'::regclass
                                    AND d.objid = c.oid AND d.deptype = 'e')
                ORDER BY 1, 2
                """
            ),
            {"kinds": list(_RELKINDS), "schemas": wanted},
        ):
            relations[(nsp, rel)] = kind
    return _Inventory(version, infos, relations)


def _existing_blobs(conn: sa.Connection, oids: list[int]) -> list[int]:
    found = conn.execute(
        sa.text(
            "SELECT oid::bigint FROM pg_catalog.pg_largeobject_metadata "
            "WHERE oid::bigint = ANY(:oids) ORDER BY 1"
        ),
        {"oids": oids},
    ).scalars()
    return [int(oid) for oid in found]


# -- child processes ---------------------------------------------------------------


class _Tool:
    """A running PostgreSQL client program.

    stderr is always drained by a thread (a chatty tool must never block on a full
    pipe while we block on its stdin); stdout is captured the same way when asked.

    A tool we feed (``feed=True``) reads its stdin from one end of a socket pair,
    not from a pipe: writing to a tool that has stopped reading must fail at once
    with BrokenPipeError. (Under eventlet, where the services and the tests run,
    a green write to a pipe whose reader has gone retries EPIPE forever; a green
    socket raises it.) The tools read a socket on stdin like any file.
    """

    def __init__(
        self,
        argv: list[str],
        conn: _Conn,
        *,
        feed: bool = False,
        stdout: int | None = None,
        capture_stdout: bool = False,
        wide_stdout: bool = False,
    ) -> None:
        self.name = argv[0]
        self.conn = conn
        exe = shutil.which(argv[0])
        if exe is None:
            raise SourceUnavailable(
                f"{argv[0]} is not installed where this job runs",
                {"tool": argv[0], "reason": "not installed"},
            )
        self._stdin: socket.socket | None = None
        theirs: socket.socket | None = None
        if feed:
            self._stdin, theirs = socket.socketpair()
            # The child's end must block (eventlet makes every socket non-blocking,
            # and a tool reading EAGAIN gives up).
            os.set_blocking(theirs.fileno(), True)
        try:
            self.proc = subprocess.Popen(
                [exe, *argv[1:]],
                stdin=theirs.fileno() if theirs is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture_stdout else stdout,
                stderr=subprocess.PIPE,
                env=conn.tool_env(),
                close_fds=True,
            )
        except BaseException:
            if self._stdin is not None:
                self._stdin.close()
            raise
        finally:
            if theirs is not None:
                theirs.close()
        if wide_stdout and self.proc.stdout is not None:
            widen_pipe(self.proc.stdout.fileno())
        self._err = bytearray()
        self._out = bytearray()
        self.killed = False
        self._threads = [self._drain(self.proc.stderr, self._err, STDERR_LIMIT)]
        if capture_stdout:
            self._threads.append(self._drain(self.proc.stdout, self._out, TOC_LIMIT))

    def _drain(self, stream: IO[bytes] | None, sink: bytearray, limit: int) -> threading.Thread:
        def run() -> None:
            assert stream is not None
            with contextlib.suppress(OSError, ValueError):
                while True:
                    chunk = stream.read(65536)
                    if not chunk:
                        break
                    if len(sink) < limit:
                        sink.extend(chunk[: limit - len(sink)])

        thread = threading.Thread(target=run, name=f"{self.name}-drain", daemon=True)
        thread.start()
        return thread

    def write(self, data: bytes) -> None:
        """Raises OSError (BrokenPipeError) when the tool has stopped reading."""
        if self._stdin is None:
            raise BrokenPipeError("stdin is closed")
        if data:
            self._stdin.sendall(data)

    def close_stdin(self) -> None:
        """End of input for the tool."""
        if self._stdin is not None:
            with contextlib.suppress(OSError):
                self._stdin.shutdown(socket.SHUT_WR)
            self._stdin.close()
            self._stdin = None

    def wait(self) -> int:
        code = self.proc.wait()
        for thread in self._threads:
            thread.join()
        return code

    def stop(self) -> None:
        """SIGKILL, nothing else: safe from another thread than the one feeding it
        (which then sees BrokenPipeError)."""
        if self.proc.poll() is None:
            self.killed = True
            with contextlib.suppress(OSError):
                self.proc.kill()

    def kill(self) -> None:
        """Stop it and collect it (from the thread that feeds it)."""
        self.stop()
        self.close_stdin()
        self.wait()

    @property
    def stderr(self) -> str:
        return self.conn.scrub(bytes(self._err).decode("utf-8", "replace")).strip()

    @property
    def stdout(self) -> str:
        return bytes(self._out).decode("utf-8", "replace")

    def failure(self, action: str, code: int) -> CofferError:
        """The error for a tool that exited with ``code``: its stderr, verbatim."""
        text = self.stderr or f"{self.name} exited with status {code}"
        details = {**self.conn.where(), "tool": self.name, "exit_code": code, "stderr": text}
        if _CONNECT_FAILURE.search(text):
            return SourceUnavailable(
                f"cannot connect to PostgreSQL {self.conn.describe()}: {text}", details
            )
        if self.name == "pg_dump" and "no matching" in text:
            # --strict-names: the config names a schema the database does not have.
            return InvalidSourceConfig(f"{action} failed: {text}", details)
        if self.name == "pg_restore":
            # pg_restore -f only reads the archive: its failures are the backup's.
            return IntegrityError(f"{action}: pg_restore cannot read the dump: {text}", details)
        if self.name == "psql":
            return Conflict(f"{action} failed and was rolled back: {text}", details)
        return SourceUnavailable(f"{action} failed: {text}", details)


#: ``fcntl``'s F_SETPIPE_SZ (Linux).
_F_SETPIPE_SZ = 1031
#: A tool's stdout pipe holds this much (64 KiB by default): the tool and the reader
#: switch in and out of the CPUs 16 times less often.
PIPE_BYTES = 1024 * 1024


def widen_pipe(fd: int) -> None:
    """Best effort: a pipe keeps its size where the system refuses."""
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)


def _require_pg_dump() -> None:
    if shutil.which("pg_dump") is None:
        raise SourceUnavailable(
            "pg_dump is not installed where backups run",
            {"tool": "pg_dump", "reason": "not installed"},
        )


def _require_schemas(db: sa.Connection, conn: _Conn, schemas: list[str] | None) -> None:
    """InvalidSourceConfig when the config names schemas the database does not have."""
    if not schemas:
        return
    present = set(db.execute(sa.text("SELECT nspname FROM pg_catalog.pg_namespace")).scalars())
    missing = [s for s in schemas if s not in present]
    if missing:
        raise InvalidSourceConfig(
            f"schema(s) {', '.join(missing)} do not exist in {conn.describe()}",
            {"config": {"schemas": [f"schema {s!r} does not exist" for s in missing]}},
        )


def _tool_version(name: str) -> str | None:
    exe = shutil.which(name)
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace").strip() or None


class _DumpStream(io.RawIOBase):
    """pg_dump's stdout as the writer sees it: counted for progress, cancellable."""

    def __init__(self, stream: IO[bytes], progress: Progress) -> None:
        super().__init__()
        self._stream = stream
        self._progress = progress
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._progress.cancelled():
            raise InterruptedError("cancelled")
        data = self._stream.read(min(size, CHUNK))
        self.count += len(data)
        if data:
            self._progress.advance(len(data), 0)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# -- the dump's table of contents --------------------------------------------------


@dataclass
class _TocEntry:
    line: str
    desc: str
    #: None for objects outside any schema (printed as ``-``).
    namespace: str | None
    tag: str


def _parse_toc(listing: str, known_schemas: Iterable[str]) -> list[_TocEntry]:
    """Parse ``pg_restore --list`` output.

    A line is ``id; catalog-oid oid DESC NAMESPACE TAG OWNER`` with nothing quoted,
    so names with spaces are ambiguous; the known descriptions and schema names
    (longest first) resolve the common cases, and the owner is the last word.
    """
    schemas = sorted(set(known_schemas), key=len, reverse=True)
    entries = []
    for line in listing.splitlines():
        match = _TOC_LINE.match(line)
        if not match:
            continue
        rest = match.group(4)
        desc = next((d for d in _TOC_DESCS if rest.startswith(d + " ")), rest.split(" ", 1)[0])
        rest = rest[len(desc) + 1 :]
        namespace: str | None
        if rest.startswith("- "):
            namespace, rest = None, rest[2:]
        else:
            name = next((s for s in schemas if rest.startswith(s + " ")), rest.split(" ", 1)[0])
            namespace, rest = name, rest[len(name) + 1 :]
        tag = rest.rsplit(" ", 1)[0] if " " in rest else rest
        entries.append(_TocEntry(line, desc, namespace, tag))
    return entries


def _check_mode(mode: str) -> None:
    if mode not in RESTORE_MODES:
        raise ValidationFailed(
            f"unknown restore mode {mode!r}", {"mode": [f"must be one of {list(RESTORE_MODES)}"]}
        )


def _check_include(include: list[str] | None) -> None:
    if include:
        raise Unsupported(
            "the postgres driver restores whole schemas: use the target's 'schemas' "
            "instead of 'include'",
            {"include": ["not supported by the postgres driver"]},
        )


def _capped(items: list[Any]) -> list[Any]:
    return items[:LIST_CAP]


def _qualified(schema: str, name: str) -> str:
    return f"{schema}.{name}"


# -- restore -----------------------------------------------------------------------


@dataclass
class _Plan:
    """What a restore will do, decided from the TOC and the target before writing."""

    mode: str
    #: Dump schema name -> target schema name, for the schemas restored.
    schemas: dict[str, str]
    whole: bool
    toc: list[_TocEntry]
    keep: list[bool]
    #: Relations of the dump (target-side names) -> relkind letter or TOC desc.
    relations: list[tuple[str, str]]
    existing: set[tuple[str, str]]
    extras: list[tuple[str, str]]
    reachable: bool
    target_error: str | None
    prelude: list[str] = field(default_factory=list)
    postlude: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    renamed: tuple[str, str] | None = None
    #: The script commits (whole-database restores); else the postlude does.
    script_commits: bool = True
    #: Large objects (database-wide, by OID) the restore writes, and those of them
    #: the target already has.
    blobs: list[int] = field(default_factory=list)
    existing_blobs: list[int] = field(default_factory=list)

    @property
    def conflicts(self) -> list[str]:
        clashes = [_qualified(*rel) for rel in self.relations if rel in self.existing]
        return clashes + [f"large object {oid}" for oid in self.existing_blobs]

    def objects(self) -> dict[str, int]:
        counts = Counter(e.desc for e, keep in zip(self.toc, self.keep, strict=True) if keep)
        return dict(sorted(counts.items()))

    def list_file(self) -> str:
        return "".join(
            (e.line if keep else ";" + e.line) + "\n"
            for e, keep in zip(self.toc, self.keep, strict=True)
        )


class _Pipeline:
    """``pg_restore -f -`` into ``psql``, with a prelude and postlude around the script.

    A relay thread copies pg_restore's script into psql, so that nothing reaches
    psql that we did not decide to send: the postlude and its ``COMMIT`` follow only
    once pg_restore has succeeded and the backup has been verified. If psql stops
    (an SQL error), the relay kills pg_restore so that the feeding side notices at
    once instead of blocking on a full pipe.

    Who commits: for a whole-database restore the script itself does
    (``pg_restore --single-transaction``), because with large objects a script
    without it carries its own ``BEGIN``/``COMMIT`` around them, which would end
    our transaction early. That is safe: a whole restore needs every byte of the
    dump, so pg_restore cannot reach its ``COMMIT`` before the held-back tail is
    released. A selective restore (some schemas, or a renamed one) skips data at the
    end of the dump, so pg_restore may finish early: there the script has no
    transaction control (large objects are not restored) and the postlude commits,
    after verification.
    """

    def __init__(self, conn: _Conn, plan: _Plan) -> None:
        self.conn = conn
        self.plan = plan
        self.finished = False
        self.relay_error: BaseException | None = None
        self.psql_gone = False
        #: pg_restore has finished (successfully) before the end of its input.
        self.input_done = False
        fd, self.list_path = tempfile.mkstemp(prefix="coffer-toc-", suffix=".list")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(plan.list_file())
        self.psql: _Tool | None = None
        self.restore: _Tool | None = None
        self.relay: threading.Thread | None = None

    def start(self) -> None:
        self.psql = _Tool(
            ["psql", "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            self.conn,
            feed=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            self.psql.write(("\n".join(self.plan.prelude) + "\n").encode("utf-8"))
        except OSError:
            raise self.failure() from None
        argv = ["pg_restore", "-f", "-", "-L", self.list_path, "--no-owner", "--no-privileges"]
        if self.plan.script_commits:
            argv.append("--single-transaction")
        self.restore = _Tool(argv, self.conn, feed=True, stdout=subprocess.PIPE)
        self.relay = threading.Thread(target=self._relay, name="pg_restore-relay", daemon=True)
        self.relay.start()

    def _relay(self) -> None:
        assert self.restore is not None and self.psql is not None
        source = self.restore.proc.stdout
        assert source is not None
        try:
            while True:
                chunk = source.read1(CHUNK) if hasattr(source, "read1") else source.read(CHUNK)
                if not chunk:
                    return
                try:
                    self.psql.write(chunk)
                except OSError:
                    self.psql_gone = True
                    self.restore.stop()
                    return
        except BaseException as exc:  # pragma: no cover - unexpected; reported by finish
            self.relay_error = exc
            self.restore.stop()

    def write(self, data: bytes) -> None:
        """Feed pg_restore; raises the pipeline's failure if it broke."""
        assert self.restore is not None
        if self.input_done:
            return
        try:
            self.restore.write(data)
        except OSError:
            # pg_restore stopped reading: done early (a selective restore needs
            # nothing after its last entry), or failed.
            code = self.restore.proc.wait()
            if code == 0 and not self.psql_gone and not self.plan.script_commits:
                self.input_done = True
                return
            raise self.failure() from None

    def finish(self, tail: bytes) -> None:
        """Release the held-back tail, wait for pg_restore, send the postlude, commit."""
        assert self.restore is not None and self.psql is not None and self.relay is not None
        self.write(tail)
        self.restore.close_stdin()
        code = self.restore.wait()
        self.relay.join()
        if code != 0 or self.psql_gone or self.relay_error is not None:
            raise self.failure()
        try:
            if self.plan.postlude:
                self.psql.write(("\n".join(self.plan.postlude) + "\n").encode("utf-8"))
        except OSError:
            raise self.failure() from None
        self.psql.close_stdin()
        if self.psql.wait() != 0:
            raise self.failure()
        self.finished = True

    def failure(self) -> CofferError:
        """Why the pipeline broke; psql's reason first (pg_restore is then only the
        victim of the relay killing it)."""
        assert self.psql is not None
        action = f"restore into {self.conn.describe()}"
        if self.restore is not None and self.restore.proc.poll() is None:
            # psql failed while pg_restore still runs: stop it before waiting.
            self.restore.kill()
        if self.relay is not None:
            self.relay.join()
        if self.restore is not None and not self.restore.killed:
            code = self.restore.wait()
            if code != 0:
                # An unreadable archive: psql must not run what it got so far.
                self.psql.kill()
                return self.restore.failure(action, code)
        if self.psql.proc.poll() is None:
            self.psql.close_stdin()
        code = self.psql.wait()
        if code != 0:
            return self.psql.failure(action, code)
        if self.relay_error is not None:
            return SourceUnavailable(f"{action} failed: {self.relay_error}", self.conn.where())
        return SourceUnavailable(f"{action} failed", self.conn.where())

    def close(self) -> None:
        """Stop whatever still runs (an error or a cancel): psql first, so that the
        open transaction dies with its session and is rolled back."""
        if not self.finished:
            if self.psql is not None:
                self.psql.kill()
            if self.restore is not None:
                self.restore.kill()
            if self.relay is not None:
                self.relay.join()
        with contextlib.suppress(OSError):
            os.unlink(self.list_path)


class _Restore:
    """One restore run."""

    def __init__(
        self, conn: _Conn, target_schemas: list[str] | None, mode: str, progress: Progress
    ) -> None:
        self.conn = conn
        self.target_schemas = target_schemas
        self.mode = mode
        self.progress = progress
        self.bytes_read = 0

    # -- driving

    def run(self, reader: BackupReader) -> dict[str, Any]:
        plan: _Plan | None = None
        pipeline: _Pipeline | None = None
        tail = b""
        dump_meta: dict[str, Any] = {}
        try:
            for entry, content in reader:
                if self.progress.cancelled():
                    raise InterruptedError("cancelled")
                if entry.path != DUMP_PATH or plan is not None or content is None:
                    # Unknown entries (a newer driver's extras) are read, not used:
                    # reading to the end is what verifies the backup.
                    self._drain(content)
                    self.progress.advance(0, 1)
                    continue
                dump_meta = dict(entry.meta)
                head, listing = self._peek(content)
                plan = self._plan(dump_meta, listing)
                chunks = self._chunks(head, content)
                if self.mode == "dry-run":
                    for chunk in chunks:
                        self._count(chunk)
                    self.progress.advance(0, 1)
                    continue
                pipeline = _Pipeline(self.conn, plan)
                pipeline.start()
                tail = self._feed(pipeline, chunks)
                self.progress.advance(0, 1)
            # The reader's loop has ended: the backup is verified. Now commit.
            if plan is None:
                raise IntegrityError(
                    f"the backup holds no {DUMP_PATH}: not a postgres backup",
                    {"expected": DUMP_PATH},
                )
            if pipeline is not None:
                self._count(tail)
                pipeline.finish(tail)
        finally:
            if pipeline is not None:
                pipeline.close()
        return self._report(plan, dump_meta)

    def _drain(self, content: BinaryIO | None) -> None:
        if content is not None:
            while content.read(CHUNK):
                pass

    def _count(self, chunk: bytes) -> None:
        self.bytes_read += len(chunk)
        self.progress.advance(len(chunk), 0)

    def _chunks(self, head: list[bytes], content: BinaryIO) -> Iterator[bytes]:
        yield from head
        while True:
            if self.progress.cancelled():
                raise InterruptedError("cancelled")
            chunk = content.read(CHUNK)
            if not chunk:
                return
            yield chunk

    def _feed(self, pipeline: _Pipeline, chunks: Iterator[bytes]) -> bytes:
        """Write everything but the last chunk; that one waits for verification."""
        held = b""
        for chunk in chunks:
            if held:
                pipeline.write(held)
                self._count(held)
            held = chunk
        return held

    def _peek(self, content: BinaryIO) -> tuple[list[bytes], str]:
        """Feed the dump's head to ``pg_restore --list`` until it has the TOC.

        Returns what was read (to be replayed to the real restore) and the listing.
        """
        lister = _Tool(["pg_restore", "--list"], self.conn, feed=True, capture_stdout=True)
        head: list[bytes] = []
        size = 0
        try:
            while lister.proc.poll() is None:
                chunk = content.read(CHUNK)
                if not chunk:
                    break
                head.append(chunk)
                size += len(chunk)
                if size > TOC_LIMIT:
                    raise IntegrityError(
                        f"the dump's table of contents is larger than {TOC_LIMIT} bytes",
                        {"limit": TOC_LIMIT},
                    )
                try:
                    lister.write(chunk)
                except OSError:
                    break  # it has what it needs and has gone
            lister.close_stdin()
            code = lister.wait()
        except BaseException:
            lister.kill()
            raise
        if code != 0:
            raise lister.failure("reading the dump", code)
        return head, lister.stdout

    # -- planning

    def _plan(self, meta: dict[str, Any], listing: str) -> _Plan:
        dump_schemas = [str(s) for s in meta.get("schemas") or []]
        first = _parse_toc(listing, dump_schemas)
        created = {e.tag for e in first if e.desc == "SCHEMA" and e.namespace is None}
        known = sorted(set(dump_schemas) | created)
        toc = _parse_toc(listing, known)
        in_dump = set(known) | {e.namespace for e in toc if e.namespace is not None}
        whole = bool(meta.get("whole_database", True)) and self.target_schemas is None

        wanted = self.target_schemas
        renamed: tuple[str, str] | None = None
        if wanted is None:
            mapping = {s: s for s in sorted(in_dump)}
        elif set(wanted) <= in_dump:
            mapping = {s: s for s in wanted}
        elif len(wanted) == 1 and len(in_dump) == 1:
            (source,) = in_dump
            renamed = (source, wanted[0])
            mapping = {source: wanted[0]}
        else:
            raise ValidationFailed(
                f"target schemas {wanted} do not match the backup, which holds "
                f"{sorted(in_dump)}: name some of those, or one new name to restore a "
                "single-schema backup under another name",
                {"target": {"schemas": [f"the backup holds {sorted(in_dump)}"]}},
            )

        keep = [self._keeps(e, mapping, whole) for e in toc]
        relations = sorted(
            {
                (mapping[e.namespace], e.tag)
                for e, k in zip(toc, keep, strict=True)
                if k and e.desc in _TOC_RELATIONS and e.namespace in mapping
            }
        )
        plan = _Plan(
            mode=self.mode,
            schemas=mapping,
            whole=whole,
            toc=toc,
            keep=keep,
            relations=relations,
            existing=set(),
            extras=[],
            reachable=False,
            target_error=None,
            renamed=renamed,
        )
        if not whole and any(
            e.namespace is None and e.desc != "SCHEMA" and not e.tag.startswith("SCHEMA ")
            for e in toc
        ):
            plan.skipped.append("objects outside any schema (extensions, large objects, ...)")

        plan.blobs = sorted(
            int(e.tag)
            for e, k in zip(toc, keep, strict=True)
            if k and e.desc == "BLOB" and e.tag.isdigit()
        )
        try:
            with self.conn.connect() as db:
                try:
                    target = _inventory(db, None)
                    if plan.blobs:
                        plan.existing_blobs = _existing_blobs(db, plan.blobs)
                except SQLAlchemyError as exc:
                    raise self.conn.unavailable(_db_error_text(exc)) from None
        except SourceUnavailable as exc:
            if self.mode != "dry-run":
                raise
            plan.target_error = exc.message
            return plan
        plan.reachable = True
        restored = set(mapping.values())
        plan.existing = {rel for rel in target.relations if rel[0] in restored}
        scope = self._replace_scope(target, mapping, whole)
        dumped = set(relations)
        plan.extras = sorted(
            rel for rel in target.relations if rel[0] in scope and rel not in dumped
        )

        if self.mode == "merge" and plan.conflicts:
            conflicts = plan.conflicts
            raise TargetNotEmpty(
                f"{len(conflicts)} object(s) of the backup already exist in "
                f"{self.conn.describe()}: {', '.join(conflicts[:20])}"
                f"{' ...' if len(conflicts) > 20 else ''}; use mode 'replace', or restore "
                "into another database or schema",
                {**self.conn.where(), "mode": "merge", "conflicts": _capped(conflicts),
                 "conflict_count": len(conflicts)},
            )  # fmt: skip
        if self.mode != "dry-run":
            self._scripts(plan, target, created, scope)
        return plan

    @staticmethod
    def _keeps(entry: _TocEntry, mapping: dict[str, str], whole: bool) -> bool:
        if entry.namespace is not None:
            return entry.namespace in mapping
        if whole:
            return True
        if entry.desc == "SCHEMA":
            return entry.tag in mapping
        # COMMENT / SECURITY LABEL / ACL on a restored schema: "SCHEMA name".
        return entry.tag.startswith("SCHEMA ") and entry.tag[len("SCHEMA ") :] in mapping

    @staticmethod
    def _replace_scope(target: _Inventory, mapping: dict[str, str], whole: bool) -> set[str]:
        """Target schemas replace drops: the restored ones, and for a whole-database
        restore every user schema (not those an extension owns)."""
        scope = set(mapping.values())
        if whole:
            scope |= {name for name, info in target.schemas.items() if not info.extension}
        return scope

    def _scripts(self, plan: _Plan, target: _Inventory, created: set[str], scope: set[str]) -> None:
        """Prelude and postlude SQL, and the schema entries left out of the script.

        The script always uses the dump's schema names. For a rename (S -> T) the
        prelude first makes the target look, under those names, like what is to be
        restored into: S (if it exists) moves aside to a holding name and T (if it
        exists) takes the name S; the postlude undoes both once the script has run.
        From there on merge and replace work the same for every restore.
        """
        prelude = [
            "SET standard_conforming_strings = on;",
            # The script's own BEGIN (inside ours) would warn; nothing else is lost.
            "SET client_min_messages = error;",
            "BEGIN;",
        ]
        postlude: list[str] = []
        #: Schemas of the target as the script will find them, by script name.
        present: dict[str, _SchemaInfo] = dict(target.schemas)
        if plan.renamed is not None and plan.renamed[0] != plan.renamed[1]:
            source, dest = plan.renamed
            hold = f"coffer_hold_{secrets.token_hex(6)}"
            if source in target.schemas:
                prelude.append(f"ALTER SCHEMA {_ident(source)} RENAME TO {_ident(hold)};")
            if dest in target.schemas:
                prelude.append(f"ALTER SCHEMA {_ident(dest)} RENAME TO {_ident(source)};")
            postlude.append(f"ALTER SCHEMA {_ident(source)} RENAME TO {_ident(dest)};")
            if source in target.schemas:
                postlude.append(f"ALTER SCHEMA {_ident(hold)} RENAME TO {_ident(source)};")
            present = {source: target.schemas[dest]} if dest in target.schemas else {}
            scope = {source}
        restored = set(plan.schemas)
        if self.mode == "replace":
            if plan.whole:
                # Large objects belong to the database, not to a schema: a
                # whole-database replace leaves only the backup's.
                prelude.append(
                    "SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;"
                )
            for name in sorted(scope):
                info = present.get(name)
                if info is None or info.extension:
                    continue
                prelude.append(f"DROP SCHEMA {_ident(name)} CASCADE;")
                if name in restored and name not in created:
                    # Filled but not created by the dump (public): put it back, empty,
                    # with its owner, grants and comment.
                    prelude.extend(self._recreate(name, info))
                else:
                    del present[name]
        else:
            # merge: a schema that exists is reused; creating it again would fail.
            for i, entry in enumerate(plan.toc):
                if entry.desc == "SCHEMA" and entry.namespace is None and entry.tag in present:
                    plan.keep[i] = False
        for name in sorted(restored - created - set(present)):
            prelude.append(f"CREATE SCHEMA {_ident(name)};")
        plan.script_commits = plan.whole
        if not plan.script_commits:
            postlude.append("COMMIT;")
        plan.prelude = prelude
        plan.postlude = postlude

    @staticmethod
    def _recreate(name: str, info: _SchemaInfo) -> list[str]:
        """A schema the dump fills but does not create (``public``), as it was."""
        sql = [f"CREATE SCHEMA {_ident(name)} AUTHORIZATION {_ident(info.owner)};"]
        sql.extend(grant + ";" for grant in info.grants)
        if info.comment is not None:
            sql.append(f"COMMENT ON SCHEMA {_ident(name)} IS {_literal(info.comment)};")
        return sql

    # -- reporting

    def _report(self, plan: _Plan | None, meta: dict[str, Any]) -> dict[str, Any]:
        assert plan is not None
        relations = plan.relations
        create = [_qualified(*r) for r in relations if r not in plan.existing]
        update = [_qualified(*r) for r in relations if r in plan.existing]
        delete = [_qualified(*r) for r in plan.extras]
        report: dict[str, Any] = {
            "mode": self.mode,
            "target": {**self.conn.where(), "reachable": plan.reachable},
            "schemas": [{"from": s, "to": t} for s, t in plan.schemas.items()],
            "objects": plan.objects(),
            "object_count": sum(plan.keep),
            "bytes_read": self.bytes_read,
            "skipped": plan.skipped,
        }
        if self.mode == "dry-run":
            if plan.target_error:
                report["target"]["error"] = plan.target_error
            report["dump"] = {
                "server_version": meta.get("server_version"),
                "schemas": meta.get("schemas"),
                "whole_database": meta.get("whole_database"),
            }
            report["conflicts"] = _capped(plan.conflicts)
            report["changes"] = {
                "create": _capped(create),
                "create_count": len(create),
                "update": _capped(update),
                "update_count": len(update),
                # What replace would drop; merge leaves these alone.
                "delete": _capped(delete),
                "delete_count": len(delete),
            }
            return report
        report["created"] = len(create)
        report["updated"] = len(update) if self.mode == "replace" else 0
        report["deleted"] = len(delete) if self.mode == "replace" else 0
        return report


# -- the driver --------------------------------------------------------------------


class PostgresDriver(SourceDriver):
    """A PostgreSQL database (or some of its schemas), through pg_dump/pg_restore."""

    name = "postgres"
    kind = "database"
    config_schema = PostgresConfigSchema
    # The password lives inside the URL, so the whole URL is sealed and redacted.
    secret_fields = ("url",)

    # backup makes check's checks itself, while pg_dump starts.
    backup_checks = True

    def check(self, config: dict[str, Any]) -> None:
        cfg = self.validate_config(config)
        conn = _Conn.from_config(cfg)
        _require_pg_dump()
        with conn.connect() as db:
            try:
                _require_schemas(db, conn, cfg.get("schemas"))
            except SQLAlchemyError as exc:
                raise conn.unavailable(_db_error_text(exc)) from None

    def stats(self, config: dict[str, Any]) -> dict[str, Any]:
        """Row counts per table and sizes.

        Rows are counted exactly (``count(*)``) when there are at most
        ``EXACT_COUNT_MAX_TABLES`` tables holding at most ``EXACT_COUNT_MAX_BYTES``
        together; otherwise they are the statistics collector's live-tuple estimates
        (``pg_stat_user_tables.n_live_tup``), which cost nothing to read. The answer
        says which (``row_counts``).
        """
        cfg = self.validate_config(config)
        conn = _Conn.from_config(cfg)
        schemas = cfg.get("schemas")
        with conn.connect() as db:
            try:
                return self._stats(db, conn, schemas)
            except SQLAlchemyError as exc:
                raise conn.unavailable(_db_error_text(exc)) from None

    @staticmethod
    def _stats(db: sa.Connection, conn: _Conn, schemas: list[str] | None) -> dict[str, Any]:
        version = str(db.execute(sa.text("SHOW server_version")).scalar())
        size = db.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
        where = (
            f"{_SYSTEM_SCHEMAS} "
            "AND (CAST(:schemas AS text[]) IS NULL OR n.nspname = ANY(:schemas))"
        )
        tables = db.execute(
            sa.text(
                f"""
                SELECT n.nspname, c.relname, pg_total_relation_size(c.oid),
                       COALESCE(s.n_live_tup, 0)
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
                WHERE c.relkind IN ('r', 'p') AND {where}
                ORDER BY 1, 2
                """
            ),
            {"schemas": schemas},
        ).all()
        schema_names = list(
            db.execute(
                sa.text(
                    f"SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE {where} ORDER BY 1"
                ),
                {"schemas": schemas},
            ).scalars()
        )
        table_bytes = sum(int(row[2]) for row in tables)
        exact = len(tables) <= EXACT_COUNT_MAX_TABLES and table_bytes <= EXACT_COUNT_MAX_BYTES
        rows: dict[str, int] = {}
        for nsp, rel, _size, live in tables:
            if exact:
                count = db.execute(
                    sa.text(f"SELECT count(*) FROM {_ident(nsp)}.{_ident(rel)}")
                ).scalar()
                rows[_qualified(nsp, rel)] = int(count or 0)
            else:
                rows[_qualified(nsp, rel)] = int(live)
        return {
            "database": conn.database,
            "server_version": version,
            "size_bytes": int(size or 0),
            "schemas": schema_names,
            "tables": len(tables),
            "table_bytes": table_bytes,
            "rows": sum(rows.values()),
            "row_counts": "exact" if exact else "estimate",
            "table_rows": dict(list(rows.items())[:LIST_CAP]),
        }

    def backup(
        self, config: dict[str, Any], writer: BackupWriter, progress: Progress
    ) -> dict[str, Any]:
        cfg = self.validate_config(config)
        conn = _Conn.from_config(cfg)
        schemas: list[str] | None = cfg.get("schemas")
        _require_pg_dump()
        argv = ["pg_dump", "-Fc", f"-Z{DUMP_COMPRESSION}", "--no-password"]
        for schema in schemas or []:
            argv += ["--schema", _pattern(schema)]
        if schemas:
            argv.append("--strict-names")
        # pg_dump starts first: its connection, snapshot and catalog reads (a tenth of
        # a second) overlap with check's checks and the inventory, made meanwhile on a
        # connection of our own. Their errors are check's, raised before any byte of
        # the dump is taken (pg_dump is then stopped); pg_dump's own, verbatim, after.
        version: list[str | None] = [None]
        probe = threading.Thread(
            target=lambda: version.__setitem__(0, _tool_version("pg_dump")), daemon=True
        )
        probe.start()
        # Only pg_dump's pipe is widened: widening pg_restore's as well (a restore)
        # made test_cancel_mid_restore_rolls_back hang; not investigated further.
        dump = _Tool(argv, conn, stdout=subprocess.PIPE, wide_stdout=True)
        try:
            return self._backup(conn, schemas, dump, writer, progress, probe, version)
        except BaseException:
            dump.kill()
            raise

    def _backup(
        self,
        conn: _Conn,
        schemas: list[str] | None,
        dump: _Tool,
        writer: BackupWriter,
        progress: Progress,
        probe: threading.Thread,
        version: list[str | None],
    ) -> dict[str, Any]:
        with conn.connect() as db:
            try:
                _require_schemas(db, conn, schemas)
                inventory = _inventory(db, schemas)
            except SQLAlchemyError as exc:
                raise conn.unavailable(_db_error_text(exc)) from None
            except InvalidSourceConfig:
                # pg_dump (--strict-names) refuses the same schemas as it starts: its
                # own words, verbatim, as when it ran alone.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = dump.proc.wait(CONNECT_TIMEOUT)
                    if code != 0:
                        dump.wait()
                        raise dump.failure(f"pg_dump of {conn.describe()}", code) from None
                raise
        probe.join()
        dumped = (
            sorted(schemas)
            if schemas
            else sorted(name for name, info in inventory.schemas.items() if not info.extension)
        )
        relations = [
            [nsp, rel, _RELKIND_NAMES.get(kind, kind)]
            for (nsp, rel), kind in sorted(inventory.relations.items())
        ]
        progress.set_total(None, 1)
        meta = {
            "format": DUMP_FORMAT,
            "server_version": inventory.server_version,
            "pg_dump_version": version[0],
            "database": conn.database,
            "schemas": dumped,
            "whole_database": not schemas,
            "relations": relations[:META_RELATIONS_CAP],
            "relation_count": len(relations),
        }
        entry = Entry(
            path=DUMP_PATH,
            type="file",
            mode=0o600,
            # A dump is new every time: a real timestamp keeps any parent comparison
            # from ever taking it for unchanged.
            mtime_ns=time.time_ns(),
            size=UNKNOWN_SIZE,
            meta=meta,
        )
        assert dump.proc.stdout is not None
        stream = _DumpStream(dump.proc.stdout, progress)
        writer.add(entry, cast(BinaryIO, stream))
        code = dump.wait()
        if code != 0:
            # The writer has taken a truncated stream: raising makes the job abort
            # it, so the backup is never committed.
            raise dump.failure(f"pg_dump of {conn.describe()}", code)
        progress.advance(0, 1)
        return {
            "format": DUMP_FORMAT,
            "bytes": stream.count,
            "database": conn.database,
            "server_version": inventory.server_version,
            "schemas": dumped,
            "relations": len(relations),
            "tables": sum(1 for r in relations if r[2] == "table"),
        }

    def check_target(self, target: dict[str, Any], options: RestoreOptions) -> None:
        """Refuse an unreachable target (merge and replace).

        The interface gives this method no access to the backup, so the merge
        conflict check (relations of the dump that already exist) runs at the start
        of :meth:`restore`, from the dump's own table of contents, before anything is
        written. A dry-run never refuses: its report says whether the target answers.
        """
        _check_mode(options.mode)
        _check_include(options.include)
        cfg = self.validate_config(target)
        conn = _Conn.from_config(cfg)
        if options.mode == "dry-run":
            return
        for tool in ("pg_restore", "psql"):
            if shutil.which(tool) is None:
                raise SourceUnavailable(
                    f"{tool} is not installed where restores run",
                    {"tool": tool, "reason": "not installed"},
                )
        with conn.connect() as db:
            try:
                db.execute(sa.text("SELECT 1"))
            except SQLAlchemyError as exc:
                raise conn.unavailable(_db_error_text(exc)) from None

    def restore(
        self,
        reader: BackupReader,
        target: dict[str, Any],
        options: RestoreOptions,
        progress: Progress,
    ) -> dict[str, Any]:
        _check_mode(options.mode)
        _check_include(options.include)
        cfg = self.validate_config(target)
        conn = _Conn.from_config(cfg)
        return _Restore(conn, cfg.get("schemas"), options.mode, progress).run(reader)
