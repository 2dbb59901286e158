"""PostgreSQL reads a plain table for the backup, and its JSON Lines are written without
encoding rows one by one in Python.

Encoding rows one by one in Python (fetch, :func:`codec.encode` per value,
``json.dumps`` per row) costs several microseconds a row. For tables whose columns
all have a kind in ``SERVER_JSON`` the bytes :func:`codec.dump_line` would write are
made in bulk instead (a decimal is spelled as the server prints it, ``0.0000001``
where Python writes ``1E-7``: the same value), in the backup's snapshot:

* through ``psql`` when it is installed (the ``postgres`` driver needs it anyway): a
  child process that joins the snapshot (``pg_export_snapshot`` / ``SET TRANSACTION
  SNAPSHOT``) and runs a plain ``COPY ... TO STDOUT`` (text format), the cheapest
  read the server offers; :class:`TextToJson` turns whole blocks of its rows into
  JSON Lines with a few C-level operations per block (split at tabs and newlines,
  the columns' keys interleaved, one ``join``), touching values one by one only
  for booleans, NULLs and strings that need a JSON escape. Building the JSON on the
  server (``row_to_json``) cost it 2.5 to 3.5 times a plain ``COPY`` of
  ``pgbench_accounts`` (to_json's escaping of a ``char(84)`` column alone adds 1.1 s
  at scale 20), more than the whole conversion here (0.5 s);
* else through pg8000's ``COPY`` stream of ``row_to_json`` rows on the snapshot's
  own connection (one Python call per row, still several times cheaper than
  encoding the row).

Tables with other kinds (dates, JSON, arrays, bytes, ...) or read with a row filter
(``COPY`` takes no bound parameters, and filter values are never spliced into SQL)
take the Python path of :mod:`.dump`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import IO, Any, NoReturn

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
#: A table of at least this many rows with a single integer key is read in key ranges
#: of about ``RANGE_ROWS`` rows on ``PARALLEL_SESSIONS`` psql sessions: building the
#: JSON costs the server 3x a plain COPY, and one session uses one server core.
PARALLEL_MIN_ROWS = 200_000
RANGE_ROWS = 25_000
PARALLEL_SESSIONS = 2
#: The line psql echoes after each range (``\\echo '\\\\END'``): ``COPY``'s text format
#: writes a backslash only doubled or before one of ``N b f n r t v``, so no row
#: line can be ``\\END``.
_END = b"\\END\n"
_RANGE_END, _EOF, _TRAILING, _FAILED = object(), object(), object(), object()
#: Kinds whose JSON value is the text ``COPY`` writes, quoted (the others: as it is).
_QUOTED = ("string", "decimal", "uuid")
#: Bytes of ``COPY`` text that a JSON string cannot hold as they are: ``COPY``'s own
#: escapes (a backslash), a quote, and the control characters ``COPY`` leaves raw.
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x08\x0b-\x1f"\\]')
#: Every other byte: ``block.translate(None, _PLAIN)`` keeps only those above, ten
#: times faster than searching a block with the expression.
_PLAIN = bytes(b for b in range(256) if not _NEEDS_ESCAPE.match(bytes([b])))
_COPY_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_COPY_ESCAPES = {
    b"\\": b"\\",
    b"b": b"\b",
    b"f": b"\f",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"v": b"\v",
}
_NULL = b"\\N"
_BOOLEANS = {b"t": b"true", b"f": b"false", _NULL: b"null"}


def server_encodable(conn: Connection, table: TableDef, row_filter: RowFilter | None) -> bool:
    return (
        conn.dialect.name == "postgresql"
        and conn.dialect.driver == "pg8000"
        and row_filter is None
        and all(c["type"]["kind"] in SERVER_JSON for c in table["columns"])
    )


def _select(conn: Connection, table: TableDef, columns: str, bounds: tuple[int, int] | None) -> str:
    """``SELECT columns`` of the table in key order (the rows of ``bounds``, a
    half-open range of its single integer key, when given)."""
    q = conn.dialect.identifier_preparer.quote
    key = row_key(table)
    order = " ORDER BY " + ", ".join(q(k) for k in key) if key else ""
    where = ""
    if bounds is not None and key:
        low, high = int(bounds[0]), int(bounds[1])
        where = f" WHERE {q(key[0])} >= {low} AND {q(key[0])} < {high}"
    return f"SELECT {columns} FROM {q(table['name'])}{where}{order}"


def copy_statement(conn: Connection, table: TableDef, bounds: tuple[int, int] | None = None) -> str:
    """``COPY`` of the table's JSON rows in key order (those of ``bounds``, a half-open
    range of its single integer key, when given)."""
    q = conn.dialect.identifier_preparer.quote
    columns = ", ".join(
        f"{q(c['name'])}::text AS {q(c['name'])}"
        if SERVER_JSON[c["type"]["kind"]]
        else f"{q(c['name'])} AS {q(c['name'])}"
        for c in table["columns"]
    )
    select = _select(conn, table, columns, bounds)
    return f"COPY (SELECT row_to_json(r)::text FROM ({select}) AS r) TO STDOUT"


def text_copy_statement(
    conn: Connection, table: TableDef, bounds: tuple[int, int] | None = None
) -> str:
    """Plain ``COPY`` (text format) of the table's columns, as :func:`copy_statement`
    selects them: the rows :class:`TextToJson` turns into the JSON it would give."""
    q = conn.dialect.identifier_preparer.quote
    columns = ", ".join(q(c["name"]) for c in table["columns"])
    return f"COPY ({_select(conn, table, columns, bounds)}) TO STDOUT"


def _json_body(field: bytes) -> bytes:
    """A ``COPY`` text value as the inside of a JSON string, escaped as ``json.dumps``
    (and PostgreSQL's ``to_json``) escape it."""
    if _NEEDS_ESCAPE.search(field) is None:
        return field
    if b"\\" in field:
        field = _COPY_ESCAPE.sub(lambda m: _COPY_ESCAPES[m.group(1)], field)
    return json.dumps(field.decode("utf-8"), ensure_ascii=False)[1:-1].encode("utf-8")


class TextToJson:
    """A table's rows in ``COPY`` text format -> its JSON Lines, byte for byte what
    ``row_to_json`` (and :func:`codec.dump_line`) write for them.

    A block of whole rows is split at tabs and newlines (``COPY`` escapes both inside
    values), each column's values are taken with one slice, interleaved with the
    constant parts (``{"key":``, quotes, ``}``) of a per-row template and joined:
    no Python work per row. Values are touched one by one only where the text is
    not already the JSON: booleans (``t`` -> ``true``), NULLs (``\\N`` -> ``null``) and
    strings of a block holding a backslash, a quote or a control character.
    """

    def __init__(self, table: TableDef) -> None:
        columns = table["columns"]
        self.keys = [json.dumps(c["name"], ensure_ascii=False).encode("utf-8") for c in columns]
        self.kinds = [str(c["type"]["kind"]) for c in columns]
        self._templates: dict[tuple[bool, ...], list[bytes | None]] = {}

    def _template(self, own: tuple[bool, ...]) -> list[bytes | None]:
        """One row's parts, ``None`` where its values go; ``own[i]``: the values of
        column ``i`` carry their own quotes (they hold a ``null``)."""
        parts: list[bytes | None] = []
        for i, key in enumerate(self.keys):
            lead = b"{" if i == 0 else b","
            if i and self.kinds[i - 1] in _QUOTED and not own[i - 1]:
                lead = b'"' + lead
            quote = b'"' if self.kinds[i] in _QUOTED and not own[i] else b""
            parts += [lead + key + b":" + quote, None]
        close = b'"' if self.kinds[-1] in _QUOTED and not own[-1] else b""
        parts.append(close + b"}\n")
        return parts

    def convert(self, block: bytes) -> tuple[bytes, int]:
        """``block``: whole rows, each ending with a newline -> (JSON Lines, rows)."""
        width = len(self.keys)
        if not width:  # a table without columns: an empty line a row, ``{}`` in JSON
            rows = block.count(b"\n")
            return b"{}\n" * rows, rows
        fields = block.replace(b"\n", b"\t").split(b"\t")
        fields.pop()  # after the last newline
        rows, rest = divmod(len(fields), width)
        if rest or not block.endswith(b"\n"):
            raise ValueError(f"COPY rows do not have the table's {width} columns")
        special = bool(block.translate(None, _PLAIN))
        columns: list[list[bytes]] = []
        own: list[bool] = []
        for i, kind in enumerate(self.kinds):
            values = fields[i::width]
            mine = False
            if kind == "boolean":
                values = [_BOOLEANS[v] for v in values]
            elif kind in _QUOTED:
                if _NULL in values or (special and kind == "string"):
                    values = [
                        b"null" if v == _NULL else b'"' + _json_body(v) + b'"' for v in values
                    ]
                    mine = True
            elif _NULL in values:
                values = [b"null" if v == _NULL else v for v in values]
            columns.append(values)
            own.append(mine)
        key = tuple(own)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = self._template(key)
        parts = template * rows
        step = len(template)
        for i, values in enumerate(columns):
            parts[2 * i + 1 :: step] = values
        return b"".join(parts), rows  # type: ignore[arg-type]


def _unescape(block: bytes) -> bytes:
    """COPY's text format doubles every backslash: the only byte it escapes in JSON text,
    which holds no raw control characters. ``block`` must hold whole rows. (Looking for
    one byte first: most blocks have none, and ``in`` is much faster than ``replace``.)"""
    return block.replace(b"\\\\", b"\\") if b"\\" in block else block


def copy_lines(
    conn: Connection, table: TableDef, progress: Progress, written: list[int]
) -> Iterator[bytes]:
    """The table's JSON Lines, by ``psql`` when it is there, else by pg8000."""
    env = libpq_env(conn.engine.url)
    psql = shutil.which("psql")
    if psql and env is not None:
        ranges = key_ranges(conn, table)
        return psql_lines(psql, env, conn, table, progress, written, ranges, PARALLEL_SESSIONS)
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


def key_ranges(conn: Connection, table: TableDef) -> list[tuple[int, int]] | None:
    """Half-open ranges of a big table's single integer key, about :data:`RANGE_ROWS`
    rows each, to read on several sessions; ``None`` for a table read in one piece."""
    key = row_key(table)
    rows = int(table.get("rows") or 0)
    if not key or len(key) != 1 or rows < PARALLEL_MIN_ROWS:
        return None
    kinds = {c["name"]: c["type"]["kind"] for c in table["columns"]}
    if kinds.get(key[0]) != "integer":
        return None
    q = conn.dialect.identifier_preparer.quote
    low, high = conn.exec_driver_sql(
        f"SELECT min({q(key[0])}), max({q(key[0])}) FROM {q(table['name'])}"
    ).one()
    if low is None:
        return None
    low, high = int(low), int(high)
    step = max(1, -(-(high - low + 1) // max(2, rows // RANGE_ROWS)))
    return [(start, min(start + step, high + 1)) for start in range(low, high + 1, step)]


def _session_script(
    snapshot: str, conn: Connection, table: TableDef, ranges: list[tuple[int, int]] | None
) -> str:
    """One psql session's script: the snapshot, then its ranges' COPYs, each followed by
    the :data:`_END` line (the whole table and one ``_END`` when ``ranges`` is None)."""
    lines = [
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;",
        f"SET TRANSACTION SNAPSHOT '{snapshot}';",  # the server's own id: [0-9A-F-]
    ]
    pieces: list[tuple[int, int] | None] = list(ranges) if ranges else [None]
    for bounds in pieces:
        lines += [f"{text_copy_statement(conn, table, bounds)};", "\\echo '\\\\END'"]
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


class _Session:
    """One psql process reading some ranges; a thread splits its output into chunks of
    whole rows and :data:`_RANGE_END` marks, handed over through a bounded queue so that
    the session works ahead of the writer by at most :data:`_QUEUED_CHUNKS` chunks."""

    def __init__(
        self,
        psql: str,
        env: dict[str, str],
        script: str,
        stop: threading.Event,
        convert: TextToJson,
    ):
        self.stop = stop
        self.convert = convert
        self.failure: Exception | None = None  # the rows could not be converted
        self.proc = subprocess.Popen(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.errors = bytearray()
        self.drain = _drain(self.proc.stderr, self.errors)
        self.out: queue.Queue[tuple[bytes, int] | object] = queue.Queue(_QUEUED_CHUNKS * 2)
        self.proc.stdin.write(script.encode("utf-8"))
        self.proc.stdin.close()
        self.reader = threading.Thread(target=self._read, name="psql-rows", daemon=True)
        self.reader.start()

    def _put(self, item: tuple[bytes, int] | object) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise InterruptedError("stopped")

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        rest = b""
        convert = self.convert.convert
        try:
            while True:
                block = stdout.read(CHUNK_BYTES)
                if not block:
                    break
                data = rest + block
                cut = data.rfind(b"\n") + 1
                rest, data = data[cut:], data[:cut]
                start = 0
                while start < len(data):
                    mark = _find_end(data, start)
                    if mark < 0:
                        self._put(convert(data[start:]))
                        break
                    if mark > start:
                        self._put(convert(data[start:mark]))
                    self._put(_RANGE_END)
                    start = mark + len(_END)
            self._put(_TRAILING if rest else _EOF)
        except InterruptedError:
            return
        except Exception as exc:  # handed to the writer's side, raised there
            self.failure = exc
            with suppress(InterruptedError):
                self._put(_FAILED)

    def take(self) -> tuple[bytes, int] | object:
        return self.out.get()

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait()
        self.drain.join()
        return code, self.errors.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(5)
        self.drain.join(5)  # psql is gone: its stderr ends; close it only once read
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with suppress(OSError):
                    stream.close()


def _find_end(data: bytes, start: int) -> int:
    """Where the next :data:`_END` line begins in line-aligned ``data``, or -1. A
    ``COPY`` row holds no raw newline and never starts with ``\\E``: ``\\END`` at a
    line's start is ours."""
    if data.find(b"\\", start) < 0:  # memchr: most blocks hold no backslash at all
        return -1
    mark = data.find(_END, start)
    while mark > 0 and data[mark - 1] != 0x0A:
        mark = data.find(_END, mark + 1)
    return mark


def psql_lines(
    psql: str,
    env: dict[str, str],
    conn: Connection,
    table: TableDef,
    progress: Progress,
    written: list[int],
    ranges: list[tuple[int, int]] | None = None,
    sessions: int = 1,
) -> Iterator[bytes]:
    """The table's rows through psql: in one session, or its key ``ranges`` dealt out
    round-robin to ``sessions`` psql processes that share the backup's snapshot (as
    ``pg_dump -j`` does) and are read back in key order."""
    snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
    count = max(1, min(sessions, len(ranges) if ranges else 1))
    parts: list[list[tuple[int, int]] | None] = (
        [ranges[i::count] for i in range(count)] if ranges else [None]
    )
    stop = threading.Event()
    started: list[_Session] = []
    finished = False
    try:
        convert = TextToJson(table)
        for part in parts:
            script = _session_script(snapshot, conn, table, part)
            started.append(_Session(psql, env, script, stop, convert))
        for index in range(len(ranges) if ranges else 1):
            session = started[index % count]
            while True:
                item = session.take()
                if item is _RANGE_END:
                    break
                if item is _FAILED:
                    reason = f"unexpected COPY output: {session.failure}"
                    raise SourceUnavailable(
                        f"cannot read table {table['name']!r} from "
                        f"{display_url(conn.engine.url)}: {reason}",
                        {"table": table["name"], "reason": reason},
                    )
                if not isinstance(item, tuple):  # psql ended before this range did
                    _fail(conn, table, session)
                if progress.cancelled():
                    raise InterruptedError("cancelled")
                lines, rows = item
                written[0] += rows
                progress.advance(bytes_done=len(lines), items_done=rows)
                yield lines
        for session in started:
            if session.take() is not _EOF or session.finish()[0] != 0:
                _fail(conn, table, session)
        finished = True
    finally:
        stop.set()
        for session in started:
            if not finished:
                with suppress(queue.Empty):
                    while True:
                        session.out.get_nowait()
            session.close()


def _fail(conn: Connection, table: TableDef, session: _Session) -> NoReturn:
    code, reason = session.finish()
    reason = reason or f"psql exit status {code}"
    raise SourceUnavailable(
        f"cannot read table {table['name']!r} from {display_url(conn.engine.url)}: {reason}",
        {"table": table["name"], "reason": reason},
    )


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
