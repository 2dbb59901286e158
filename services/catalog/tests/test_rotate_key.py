"""Master key rotation: tenant keys rewrapped, catalog secrets resealed, no data rewritten."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from services.catalog.db import upgrade_schema
from services.catalog.models import Source, Tenant
from services.catalog.rotate_key import rotate
from shared.crypto import SecretBox
from shared.database import make_engine
from shared.errors import CofferError
from shared.repository import Entry, open_repository
from shared.store import open_store

OLD, NEW = bytes(32), bytes(range(32))


def test_rotation_rewraps_and_reseals(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/repo"
    repo = open_repository(url, OLD)
    with repo.writer("acme", "b1") as writer:
        writer.add(Entry(path="f", size=5), io.BytesIO(b"hello"))
        writer.commit({})
    store = open_store(url)
    packs_before = {k: store.get_bytes(k) for k in store.list("tenants/acme/packs/")}

    engine = make_engine(f"sqlite:///{tmp_path}/catalog.db")
    upgrade_schema(engine)
    with Session(engine) as session:
        session.add(Tenant(name="acme"))
        session.flush()
        session.add(
            Source(
                id="s1",
                tenant="acme",
                name="db",
                driver="filesystem",
                config={"password": "********"},
                secrets=SecretBox(OLD).seal({"password": "hunter2"}, aad="source:s1"),
            )
        )
        session.commit()
        report = rotate(session, repo, OLD, NEW)
    assert report == {"tenant_keys_rewrapped": 1, "secrets_resealed": 1}

    with Session(engine) as session:
        sealed = session.get(Source, "s1")
        assert sealed is not None and sealed.secrets is not None
        assert SecretBox(NEW).open(sealed.secrets, aad="source:s1") == {"password": "hunter2"}
        with pytest.raises(ValueError):
            SecretBox(OLD).open(sealed.secrets, aad="source:s1")

    with open_repository(url, NEW).reader("acme", "b1") as reader:
        assert [(e.path, c.read() if c else None) for e, c in reader] == [("f", b"hello")]
    with pytest.raises(CofferError):
        open_repository(url, OLD).manifest("acme", "b1")
    assert {k: store.get_bytes(k) for k in store.list("tenants/acme/packs/")} == packs_before
