"""The chunk index mirror and the catalog rebuild must not hold the SQLite write lock
across store reads.

The bug it guards against: on S3, ``mirror_packs`` inserted rows and then read the
next pack index from the store inside the same transaction. The S3 read is green
I/O, so the hub ran another greenthread; that one's write waited for the lock inside
SQLite (``busy_timeout``), blocking the only OS thread, so the mirror could never
commit and every other catalog write failed with ``database is locked``.

Reproduced here with the real parts: a SQLite file, a moto S3 server, eventlet's
green sockets (``conftest.py`` monkey-patches), and a second greenthread that writes
while the mirror waits for S3.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import eventlet
from eventlet.greenthread import GreenThread
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from services.catalog import chunk_index
from services.catalog.db import upgrade_schema
from services.catalog.models import Backup, Chunk, Tenant
from services.catalog.rebuild import rebuild
from shared.database import make_engine
from shared.jobs.results import backup_result
from shared.repository import Entry
from shared.repository.chunked import ChunkedRepository
from shared.store import open_store
from shared.store.base import ObjectStore

MASTER = b"\x07" * 32
FILES = 1500  # more than one insert batch (1,000 rows), spread over several packs


def _backup(store_url: str) -> tuple[ChunkedRepository, list[str], int]:
    repo = ChunkedRepository(open_store(store_url), MASTER, pack_size=32 * 1024)
    with repo.writer("acme", "b1") as writer:
        for i in range(FILES):
            writer.add(Entry(path=f"f{i:05d}", size=100), io.BytesIO(os.urandom(100)))
        summary = writer.commit({})
    packs = list(summary.manifest["packs"])
    assert len(packs) > 3
    return repo, packs, int(summary.manifest["new_chunks"])


class _ReadsWatched:
    """The repository, starting another writer greenthread at each pack index read;
    it runs as soon as the read yields to the hub on its green socket."""

    def __init__(self, repo: ChunkedRepository, write: Callable[[], None]) -> None:
        self._repo = repo
        self._write = write
        self.writers: list[GreenThread] = []

    def pack_index(self, tenant: str, pack_id: str) -> list[dict[str, Any]]:
        self.writers.append(eventlet.spawn(self._write))
        return self._repo.pack_index(tenant, pack_id)


def _catalog(db_url: str, tenant: bool) -> Any:
    engine = make_engine(db_url)
    upgrade_schema(engine)
    if tenant:
        with Session(engine) as session:
            session.add(Tenant(name="acme"))
            session.commit()
    return engine


def _other_writer(db_url: str) -> tuple[Any, Callable[[], None]]:
    """Another catalog request writing on its own connection. Its busy timeout is
    short so that the lock-up shows as an error in about a second (the service's
    30 s would block the whole process for 30 s, then fail alike)."""
    other = make_engine(db_url)

    def other_write() -> None:
        with other.connect() as conn:
            conn.execute(text("PRAGMA busy_timeout=1000"))
            conn.execute(text("CREATE TABLE IF NOT EXISTS probe (n INTEGER)"))
            conn.execute(text("INSERT INTO probe VALUES (1)"))
            conn.commit()

    return other, other_write


def test_mirror_lets_other_greenthreads_write_during_s3_reads(
    tmp_path: Path, s3_store_url: str
) -> None:
    repo, packs, chunks = _backup(s3_store_url)
    db_url = f"sqlite:///{tmp_path}/catalog.db"
    engine = _catalog(db_url, tenant=True)
    other, other_write = _other_writer(db_url)
    watched = _ReadsWatched(repo, other_write)
    with Session(engine) as session:
        added = chunk_index.mirror_packs(session, watched, "acme", packs)
        session.commit()
    assert len(watched.writers) == len(packs)
    for writer in watched.writers:
        writer.wait()  # OperationalError("database is locked") before the fix
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Chunk)) == chunks == added
    engine.dispose()
    other.dispose()


class _ReadsLogged:
    """The repository, logging each pack index read."""

    def __init__(self, repo: ChunkedRepository, order: list[str]) -> None:
        self._repo = repo
        self._order = order

    def pack_index(self, tenant: str, pack_id: str) -> list[dict[str, Any]]:
        self._order.append("pack")
        return self._repo.pack_index(tenant, pack_id)


def test_mirror_on_the_local_store_lets_other_requests_run_between_packs(
    tmp_path: Path,
) -> None:
    # Local reads never yield to the hub: without an explicit yield the mirror ran
    # to its end before any other request (10 s after a 1.4 GB first backup).
    repo, packs, chunks = _backup(f"file://{tmp_path}/repo")
    engine = _catalog(f"sqlite:///{tmp_path}/catalog.db", tenant=True)
    order: list[str] = []
    other = eventlet.spawn(order.append, "other request")
    with Session(engine) as session:
        added = chunk_index.mirror_packs(session, _ReadsLogged(repo, order), "acme", packs)
    other.wait()
    assert added == chunks
    assert order.index("other request") < len(packs), order
    engine.dispose()


def test_mirroring_a_pack_twice_adds_its_rows_once(tmp_path: Path) -> None:
    # Two reports of one pack (a retried completion) must not duplicate or fail.
    repo, packs, chunks = _backup(f"file://{tmp_path}/repo")
    engine = _catalog(f"sqlite:///{tmp_path}/catalog.db", tenant=True)
    with Session(engine) as session:
        assert chunk_index.mirror_packs(session, repo, "acme", packs[:2]) > 0
        assert chunk_index.mirror_packs(session, repo, "acme", packs) == chunks - sum(
            len(repo.pack_index("acme", p)) for p in packs[:2]
        )
        assert chunk_index.mirror_packs(session, repo, "acme", packs) == 0
        assert session.scalar(select(func.count()).select_from(Chunk)) == chunks
    engine.dispose()


class _RebuildReadsWatched:
    """The repository as the rebuild reads it, starting another writer greenthread
    before each manifest read and before each pack of the chunk index."""

    def __init__(self, repo: ChunkedRepository, write: Callable[[], None]) -> None:
        self._repo = repo
        self._write = write
        self.writers: list[GreenThread] = []

    def backups(self) -> Any:
        return self._repo.backups()

    def manifest(self, tenant: str, backup_id: str) -> dict[str, Any]:
        self.writers.append(eventlet.spawn(self._write))
        return self._repo.manifest(tenant, backup_id)

    def chunk_index(self, tenant: str) -> Any:
        pack = None
        for row in self._repo.chunk_index(tenant):
            if row["pack_id"] != pack:
                pack = row["pack_id"]
                self.writers.append(eventlet.spawn(self._write))
                eventlet.sleep(0)  # as a green S3 read does: the writer runs now
            yield row


def test_rebuild_lets_other_greenthreads_write_during_s3_reads(
    tmp_path: Path, s3_store_url: str
) -> None:
    repo, packs, chunks = _backup(s3_store_url)
    with repo.writer("acme", "b2", parent_id="b1") as writer:
        writer.add(Entry(path="new", size=5), io.BytesIO(b"fresh"))
        writer.commit({})
    db_url = f"sqlite:///{tmp_path}/catalog.db"
    engine = _catalog(db_url, tenant=False)
    other, other_write = _other_writer(db_url)
    watched = _RebuildReadsWatched(repo, other_write)
    with Session(engine) as session:
        report = rebuild(session, watched)
    assert len(watched.writers) >= 2 + len(packs)
    for writer in watched.writers:
        writer.wait()  # OperationalError("database is locked") before the fix
    assert report["backups_created"] == report["backups_found"] == 2
    with Session(engine) as session:
        assert sorted(session.scalars(select(Backup.id))) == ["b1", "b2"]
        assert session.scalar(select(func.count()).select_from(Chunk)) == report["chunks"]
        assert report["chunks"] > chunks
    engine.dispose()
    other.dispose()


class _CountingStore:
    """The real S3 store, counting the object reads made through it (``get_bytes``,
    ``read_range``, ``open``: each is one GET on S3)."""

    READS = ("get_bytes", "read_range", "open")

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name in self.READS:

            def counted(key: str, *args: Any, **kwargs: Any) -> Any:
                self.reads.append(key)
                return attr(key, *args, **kwargs)

            return counted
        return attr


def test_mirror_reads_one_index_set_per_set_not_one_index_per_pack(
    tmp_path: Path, s3_store_url: str
) -> None:
    # A backup's result names the index sets its writer stored; the mirror reads
    # those (one GET per set) instead of each new pack's index object (one GET per
    # pack: most of an unchanged backup's GETs on S3).
    writer_repo, _, _ = _backup(s3_store_url)
    result = backup_result(writer_repo.manifest("acme", "b1"))
    packs, sets = result["packs"], result["index_sets"]
    assert len(packs) > 3 and len(sets) == 1
    counting = _CountingStore(open_store(s3_store_url))
    repo = ChunkedRepository(cast(ObjectStore, counting), MASTER)
    expected = {(row["chunk_id"], row["pack_id"]) for row in writer_repo.chunk_index("acme")}
    engine = _catalog(f"sqlite:///{tmp_path}/catalog.db", tenant=True)
    with Session(engine) as session:
        repo.keyring.get("acme")  # the tenant's key: one read, before and after alike
        counting.reads.clear()
        added = chunk_index.mirror_packs(session, repo, "acme", packs, sets)
        reads = list(counting.reads)
        mirrored = {(c.chunk_id, c.pack_id) for c in session.scalars(select(Chunk))}
        # Mirroring the same backup again adds nothing and still reads one set.
        counting.reads.clear()
        assert chunk_index.mirror_packs(session, repo, "acme", packs, sets) == 0
        assert len(counting.reads) == 1
    assert [key.rsplit("/", 2)[-2] for key in reads] == ["index-sets"], reads
    assert added == len(expected) and mirrored == expected
    engine.dispose()


def test_mirror_falls_back_to_pack_indexes_where_no_set_covers_a_pack(
    tmp_path: Path, s3_store_url: str
) -> None:
    # A result without sets (an older backup service), a set that is gone, and a
    # pack its sets do not cover: each such pack is read from its own index object.
    writer_repo, packs, chunks = _backup(s3_store_url)
    [set_id] = writer_repo.manifest("acme", "b1")["index_sets"]
    counting = _CountingStore(open_store(s3_store_url))
    repo = ChunkedRepository(cast(ObjectStore, counting), MASTER)
    engine = _catalog(f"sqlite:///{tmp_path}/catalog.db", tenant=True)
    with Session(engine) as session:
        repo.keyring.get("acme")
        counting.reads.clear()
        assert chunk_index.mirror_packs(session, repo, "acme", packs[:2]) > 0
        assert len(counting.reads) == 2  # no sets reported: one index per pack
        counting.reads.clear()
        missing = "0" * 32
        added = chunk_index.mirror_packs(session, repo, "acme", packs, [missing, set_id])
        assert len(counting.reads) == 2  # the missing set, then the real one
        assert added == chunks - sum(len(repo.pack_index("acme", p)) for p in packs[:2])
        assert session.scalar(select(func.count()).select_from(Chunk)) == chunks
    engine.dispose()


class _SetReadsLogged(_ReadsLogged):
    """The repository, logging each index set read and each pack taken from a set."""

    def index_set(self, tenant: str, set_id: str) -> Any:
        self._order.append("set")
        packs = self._repo.index_set(tenant, set_id)
        return [(pack_id, self._logged(rows)) for pack_id, rows in packs or []]

    def _logged(self, rows: Any) -> Any:
        self._order.append("pack")
        yield from rows


def test_mirror_from_an_index_set_lets_other_requests_run_between_packs(
    tmp_path: Path,
) -> None:
    # One set holds many packs: the mirror must still yield to the hub between them.
    repo, packs, chunks = _backup(f"file://{tmp_path}/repo")
    sets = repo.manifest("acme", "b1")["index_sets"]
    engine = _catalog(f"sqlite:///{tmp_path}/catalog.db", tenant=True)
    order: list[str] = []
    other = eventlet.spawn(order.append, "other request")
    with Session(engine) as session:
        logged = _SetReadsLogged(repo, order)
        added = chunk_index.mirror_packs(session, logged, "acme", packs, sets)
    other.wait()
    assert added == chunks
    assert order.count("set") == 1 and order.count("pack") == len(packs), order
    assert order.index("other request") < len(order) - 1, order
    engine.dispose()
