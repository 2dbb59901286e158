"""PostgreSQL writes a plain table's JSON Lines itself: ``row_to_json`` through ``COPY``.

Encoding rows one by one in Python (fetch, :func:`codec.encode` per value,
``json.dumps`` per row) costs several microseconds a row; for tables whose columns
all have a kind in ``SERVER_JSON`` the server's ``row_to_json`` writes the very bytes
:func:`codec.dump_line` would (a decimal is spelled as the server prints it,
``0.0000001`` where Python writes ``1E-7``: the same value), so those tables are
read as ``COPY (SELECT row_to_json(r) ...) TO STDOUT`` in the backup's snapshot:

* through ``psql`` when it is installed (the ``postgres`` driver needs it anyway): a
  child process that joins the snapshot (``pg_export_snapshot`` / ``SET TRANSACTION
  SNAPSHOT``) and whose output is read in large blocks, with no per-row work here;
* else through pg8000's ``COPY`` stream on the snapshot's own connection (one
  Python call per row, still several times cheaper than encoding the row).

Tables with other kinds (dates, JSON, arrays, bytes, ...) or read with a row filter
(``COPY`` takes no bound parameters, and filter values are never spliced into SQL)
take the Python path of :mod:`.dump`.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import IO, Any

from sqlalchemy.engine import URL, Connection

from shared.errors import SourceUnavailable
from shared.sources.base import Progress
from shared.sources.sql.connect import CONNECT_TIMEOUT, display_url, unavailable
from shared.sources.sql.filters import RowFilter
from shared.sources.sql.schema import TableDef, row_key

#: Kinds whose JSON, as PostgreSQL's ``row_to_json`` writes it, is what
#: :func:`codec.encode` writes (``True``: of the column cast to text).
SERVER_JSON = {"integer": False, "boolean": False, "string": False, "decimal": True, "uuid": True}
#: Bytes handed to the writer at a time.
CHUNK_BYTES = 256 * 1024
#: Chunks that may wait between the pg8000 reading thread and the writer.
_QUEUED_CHUNKS = 8
#: Most stderr kept from psql (for the error message).
_STDERR_LIMIT = 16 * 1024


def server_encodable(conn: Connection, table: TableDef, row_filter: RowFilter | None) -> bool:
    return (
        conn.dialect.name == "postgresql"
        and conn.dialect.driver == "pg8000"
        and row_filter is None
        and all(c["type"]["kind"] in SERVER_JSON for c in table["columns"])
    )


def copy_statement(conn: Connection, table: TableDef) -> str:
    q = conn.dialect.identifier_preparer.quote
    columns = ", ".join(
        f"{q(c['name'])}::text AS {q(c['name'])}"
        if SERVER_JSON[c["type"]["kind"]]
        else f"{q(c['name'])} AS {q(c['name'])}"
        for c in table["columns"]
    )
    key = row_key(table)
    order = " ORDER BY " + ", ".join(q(k) for k in key) if key else ""
    select = f"SELECT {columns} FROM {q(table['name'])}{order}"
    return f"COPY (SELECT row_to_json(r)::text FROM ({select}) AS r) TO STDOUT"


def _unescape(block: bytes) -> bytes:
    """COPY's text format doubles every backslash: the only byte it escapes in JSON text,
    which holds no raw control characters. ``block`` must hold whole rows."""
    return block.replace(b"\\\\", b"\\")


def copy_lines(
    conn: Connection, table: TableDef, progress: Progress, written: list[int]
) -> Iterator[bytes]:
    """The table's JSON Lines, by ``psql`` when it is there, else by pg8000."""
    env = libpq_env(conn.engine.url)
    psql = shutil.which("psql")
    if psql and env is not None:
        return psql_lines(psql, env, conn, table, progress, written)
    return pg8000_lines(conn, table, progress, written)


# -- through psql --------------------------------------------------------------------------


def libpq_env(url: URL) -> dict[str, str] | None:
    """``psql``'s environment for ``url`` (nothing on its command line, where ``ps``
    shows it), or None when the URL holds options libpq would not read the same way."""
    if set(url.query) or not url.host or not url.database:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "LC_ALL"}
    env.update(
        PGHOST=str(url.host),
        PGPORT=str(url.port or 5432),
        PGDATABASE=str(url.database),
        PGCONNECT_TIMEOUT=str(max(1, int(CONNECT_TIMEOUT))),
        PGAPPNAME="coffer",
        PGCLIENTENCODING="UTF8",
        LC_MESSAGES="C",
    )
    if url.username:
        env["PGUSER"] = url.username
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return env


def _drain(stream: IO[bytes], sink: bytearray) -> threading.Thread:
    def run() -> None:
        for line in stream:
            if len(sink) < _STDERR_LIMIT:
                sink.extend(line)

    thread = threading.Thread(target=run, name="psql-stderr", daemon=True)
    thread.start()
    return thread


def psql_lines(
    psql: str,
    env: dict[str, str],
    conn: Connection,
    table: TableDef,
    progress: Progress,
    written: list[int],
) -> Iterator[bytes]:
    snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
    script = (
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
        f"SET TRANSACTION SNAPSHOT '{snapshot}';\n"  # the server's own id: [0-9A-F-]
        f"{copy_statement(conn, table)};\n"
        "COMMIT;\n"
    )
    proc = subprocess.Popen(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    errors = bytearray()
    drain = _drain(proc.stderr, errors)
    finished = False
    try:
        proc.stdin.write(script.encode("utf-8"))
        proc.stdin.close()
        rest = b""
        while True:
            block = proc.stdout.read(CHUNK_BYTES)
            if not block:
                break
            if progress.cancelled():
                raise InterruptedError("cancelled")
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                rows = block.count(b"\n", 0, cut)
                written[0] += rows
                progress.advance(bytes_done=cut, items_done=rows)
                yield _unescape(block[:cut])
        code = proc.wait()
        drain.join()
        if code != 0 or rest:
            reason = errors.decode("utf-8", "replace").strip() or f"psql exit status {code}"
            raise SourceUnavailable(
                f"cannot read table {table['name']!r} from {display_url(conn.engine.url)}: "
                f"{reason}",
                {"table": table["name"], "reason": reason},
            )
        finished = True
    finally:
        if not finished and proc.poll() is None:
            proc.kill()
        proc.wait()
        drain.join(5)  # psql is gone: its stderr ends; close it only once read
        for stream in (proc.stdout, proc.stderr):
            with suppress(OSError):
                stream.close()


# -- through pg8000 ------------------------------------------------------------------------


class _CopySink:
    """The stream pg8000 writes ``COPY`` rows into (one ``write`` per row, on the reading
    thread); whole rows go to the writer's side through a bounded queue."""

    def __init__(self, out: queue.Queue[bytes | BaseException | None]) -> None:
        self.out = out
        self.buffer = bytearray()
        self.rows = 0
        self.stopped = threading.Event()
        self.done = threading.Event()  # the COPY ran to its end

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.rows += 1
        if len(self.buffer) >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.put(_unescape(bytes(self.buffer)))
            self.buffer.clear()

    def put(self, item: bytes | BaseException | None) -> None:
        """Queue ``item``; once the writer's side has stopped, abort the ``COPY`` instead
        of waiting for room that will never come."""
        while True:
            if self.stopped.is_set():
                raise InterruptedError("the writer stopped reading")
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def pg8000_lines(
    conn: Connection, table: TableDef, progress: Progress, written: list[int]
) -> Iterator[bytes]:
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUED_CHUNKS)
    sink = _CopySink(chunks)
    statement = copy_statement(conn, table)
    dbapi: Any = conn.connection.dbapi_connection  # pg8000's: execute(..., stream=)

    def read() -> None:
        cursor = dbapi.cursor()
        try:
            cursor.execute(statement, stream=sink)
            sink.done.set()
            sink.flush()
            sink.put(None)
        except BaseException as exc:  # handed to the writer's side, raised there
            with suppress(InterruptedError):
                sink.put(exc)
        finally:
            with suppress(Exception):
                cursor.close()

    reader = threading.Thread(target=read, name=f"copy-{table['name']}", daemon=True)
    reader.start()
    rows_before = 0
    try:
        while True:
            item = chunks.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                if isinstance(item, conn.dialect.loaded_dbapi.Error):
                    raise unavailable(
                        conn.engine.url, item, f"read table {table['name']!r} from"
                    ) from None
                raise item
            if progress.cancelled():
                raise InterruptedError("cancelled")
            rows = sink.rows
            written[0] = rows
            progress.advance(bytes_done=len(item), items_done=rows - rows_before)
            rows_before = rows
            yield item
        written[0] = sink.rows
    finally:
        sink.stopped.set()
        reader.join()  # it sees ``stopped`` within 0.1 s and aborts the COPY
        if not sink.done.is_set():
            # pg8000 was left in the middle of the COPY: the connection is unusable, and
            # a rollback on it would fail; drop it (the server ends the transaction).
            conn.invalidate()
