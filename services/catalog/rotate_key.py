"""Rotate the master key: ``python -m services.catalog.rotate_key NEW_KEY_FILE``.

The master key wraps each tenant's data key in the repository and seals the source
credentials in the catalog. Rotation rewraps the former and reseals the latter; no
backup data is rewritten. Stop the services first, run this with the current key in
``COFFER_MASTER_KEY`` / ``COFFER_MASTER_KEY_FILE``, then start them with the new key.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.catalog.models import Restore, Source
from shared.crypto import SecretBox


def reseal(session: Session, old_key: bytes, new_key: bytes) -> int:
    """Re-encrypt every sealed secret in the catalog under the new master key."""
    old, new = SecretBox(old_key), SecretBox(new_key)
    count = 0
    for source in session.scalars(select(Source).where(Source.secrets.is_not(None))):
        assert source.secrets is not None
        aad = f"source:{source.id}"
        source.secrets = new.seal(old.open(source.secrets, aad=aad), aad=aad)
        count += 1
    for restore in session.scalars(select(Restore).where(Restore.target_secrets.is_not(None))):
        assert restore.target_secrets is not None
        aad = f"restore:{restore.id}"
        restore.target_secrets = new.seal(old.open(restore.target_secrets, aad=aad), aad=aad)
        count += 1
    return count


def read_key(path: Path) -> bytes:
    key = base64.b64decode(path.read_text().strip(), validate=True)
    if len(key) != 32:
        raise SystemExit(f"{path}: a master key is 32 bytes in base64")
    return key


def rotate(session: Session, repository: Any, old_key: bytes, new_key: bytes) -> dict[str, int]:
    tenants = repository.rotate_master_key(new_key)
    secrets = reseal(session, old_key, new_key)
    session.commit()
    return {"tenant_keys_rewrapped": tenants, "secrets_resealed": secrets}


def main(argv: list[str]) -> int:
    from sqlalchemy.orm import sessionmaker

    from services.catalog.db import upgrade_schema
    from shared.config import settings
    from shared.database import make_engine
    from shared.repository import open_repository

    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    cfg = settings()
    old_key, new_key = cfg.master_key(), read_key(Path(argv[0]))
    engine = make_engine(cfg.database_url)
    upgrade_schema(engine)
    with sessionmaker(engine)() as session:
        report = rotate(session, open_repository(cfg.store_url, old_key), old_key, new_key)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
