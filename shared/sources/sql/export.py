"""Reading a backup out for people: table list, CSV / JSON Lines per table, a zip of CSVs.

Everything streams: a table is read line by line from the repository and written out
in chunks; the zip is produced through a write-only sink that hands each compressed
piece on as soon as :mod:`zipfile` writes it (entries use data descriptors and ZIP64,
so no seeking and no temporary file, whatever the size).

CSV (``fmt="csv"``): UTF-8 with a byte-order mark (so spreadsheet programs pick the
encoding), a header row, RFC 4180 quoting (``csv`` module, ``\\r\\n`` line ends), NULL
as an empty field (an empty string is empty too: CSV cannot tell them apart), dates
and times in ISO 8601, bytes in base64, JSON as compact text, arrays as JSON. Text
that a spreadsheet would run as a formula gets a leading ``'`` (see
:func:`codec.csv_cell`).

JSON Lines (``fmt="jsonl"``): one plain JSON object per row: bytes in base64,
decimals as strings, NaN/Infinity as strings, JSON columns as JSON values.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from shared.errors import IntegrityError, NotFound, ValidationFailed
from shared.repository import BackupReader, Entry
from shared.sources.sql import codec
from shared.sources.sql.dump import entry_path
from shared.sources.sql.restore import iter_lines, load_row, read_schema
from shared.sources.sql.schema import Schema, TableDef

EXPORT_FORMATS = ("csv", "jsonl")
CHUNK = 256 * 1024
BOM = "\ufeff"


def list_tables(reader: BackupReader) -> list[dict[str, Any]]:
    """``[{name, rows, columns: [{name, type, kind, nullable, primary_key}]}]`` in backup order.

    Reads ``schema.json`` and the entries' metadata; table contents are not read.
    """
    entries = iter(reader)
    schema = read_schema(entries)
    rows: dict[str, int] = {}
    for entry, _content in entries:
        table = entry.meta.get("table") if isinstance(entry.meta, dict) else None
        if table is not None:
            rows[str(table)] = int(entry.meta.get("rows") or 0)
    result = []
    for table in schema.get("tables") or []:
        pk = set((table.get("primary_key") or {}).get("columns") or [])
        result.append(
            {
                "name": table["name"],
                "rows": rows.get(table["name"], int(table.get("rows") or 0)),
                "columns": [
                    {
                        "name": c["name"],
                        "type": c["type"].get("native") or c["type"]["kind"],
                        "kind": c["type"]["kind"],
                        "nullable": c["nullable"],
                        "primary_key": c["name"] in pk,
                    }
                    for c in table["columns"]
                ],
            }
        )
    return result


def _find(schema: Schema, table: str) -> TableDef:
    for item in schema.get("tables") or []:
        if item["name"] == table:
            return dict(item)
    raise NotFound(f"the backup has no table {table!r}", {"table": table})


def _table_entries(
    reader: BackupReader,
) -> tuple[Schema, Iterator[tuple[Entry, BinaryIO | None]]]:
    entries = iter(reader)
    return read_schema(entries), entries


def export_table(reader: BackupReader, table: str, fmt: str) -> Iterator[bytes]:
    """One table of a backup as CSV or JSON Lines (see the module docstring).

    Not a generator itself: a wrong format or table raises here, at the call, before
    a caller has sent any response headers; the returned iterator then streams."""
    if fmt not in EXPORT_FORMATS:
        raise ValidationFailed(
            f"unknown export format {fmt!r}", {"fmt": [f"must be one of {list(EXPORT_FORMATS)}"]}
        )
    schema, entries = _table_entries(reader)
    definition = _find(schema, table)
    return _export_table(entries, definition, fmt)


def _export_table(
    entries: Iterator[tuple[Entry, BinaryIO | None]], definition: TableDef, fmt: str
) -> Iterator[bytes]:
    table = definition["name"]
    for entry, content in entries:
        if entry.meta.get("table") == table and content is not None:
            if fmt == "csv":
                yield from _csv_chunks(definition, content)
            else:
                yield from _jsonl_chunks(definition, content)
            break
    else:
        raise IntegrityError(f"the backup lacks the rows of table {table!r}")
    for _entry in entries:  # let the reader verify the rest of the backup
        pass


def _csv_chunks(table: TableDef, content: BinaryIO) -> Iterator[bytes]:
    columns = [c["name"] for c in table["columns"]]
    descs = [c["type"] for c in table["columns"]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    buffer.write(BOM)
    writer.writerow(columns)
    for line in iter_lines(content):
        row = load_row(line, table["name"])
        writer.writerow(
            [codec.csv_cell(row.get(c), d) for c, d in zip(columns, descs, strict=True)]
        )
        if buffer.tell() >= CHUNK:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


def _jsonl_chunks(table: TableDef, content: BinaryIO) -> Iterator[bytes]:
    columns = [(c["name"], c["type"]) for c in table["columns"]]
    buffer = bytearray()
    for line in iter_lines(content):
        row = load_row(line, table["name"])
        buffer += codec.dump_line({c: codec.human(row.get(c), d) for c, d in columns})
        if len(buffer) >= CHUNK:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


class _Sink(io.RawIOBase):
    """A write-only, unseekable file that collects what zipfile writes until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._size += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return data

    def pending(self) -> int:
        return self._size


def _zip_name(table: str, used: set[str]) -> str:
    base = entry_path(table)[len("tables/") : -len(".jsonl")]
    name = f"{base}.csv"
    n = 2
    while name.lower() in used:
        name = f"{base}_{n}.csv"
        n += 1
    used.add(name.lower())
    return name


def export_zip(reader: BackupReader) -> Iterator[bytes]:
    """A zip with one CSV per table (``<table>.csv``), streamed.

    ``schema.json`` is read at the call (a backup that is not an sql backup raises
    here); the returned iterator streams the archive."""
    schema, entries = _table_entries(reader)
    return _export_zip(schema, entries)


def _export_zip(
    schema: Schema, entries: Iterator[tuple[Entry, BinaryIO | None]]
) -> Iterator[bytes]:
    tables = {t["name"]: t for t in schema.get("tables") or []}
    sink = _Sink()
    used: set[str] = set()
    with zipfile.ZipFile(
        sink, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True
    ) as archive:
        for entry, content in entries:
            name = entry.meta.get("table") if isinstance(entry.meta, dict) else None
            if name not in tables or content is None:
                continue
            info = zipfile.ZipInfo(_zip_name(str(name), used), date_time=_zip_time(schema))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, mode="w", force_zip64=True) as member:
                for chunk in _csv_chunks(tables[str(name)], content):
                    member.write(chunk)
                    if sink.pending() >= CHUNK:
                        yield sink.take()
            if sink.pending():
                yield sink.take()
    if sink.pending():
        yield sink.take()


def _zip_time(schema: Schema) -> tuple[int, int, int, int, int, int]:
    captured = str(schema.get("captured_at") or "")
    try:
        when = codec.parse_datetime(captured)
        return (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    except ValueError:
        return (1980, 1, 1, 0, 0, 0)
