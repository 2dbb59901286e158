"""Session provider for the catalog (nameko-sqlalchemy does not support SQLAlchemy 2).

The engine is built once per container in ``setup()``, which also upgrades the
schema to the newest Alembic revision; each worker gets its own ``Session``, closed
(and rolled back if not committed) when the worker ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from nameko.extensions import DependencyProvider
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import settings
from shared.database import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"
#: Serialises schema upgrades when several catalog instances start at once.
MIGRATION_LOCK_ID = 0x636F66666572


def upgrade_schema(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class CatalogDatabase(DependencyProvider):
    def setup(self) -> None:
        self.engine = make_engine(settings(self.container.config).database_url)
        upgrade_schema(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.open_sessions: dict[Any, Session] = {}

    def stop(self) -> None:
        self.engine.dispose()

    def get_dependency(self, worker_ctx: Any) -> Session:
        session = self.sessions()
        self.open_sessions[worker_ctx] = session
        return session

    def worker_teardown(self, worker_ctx: Any) -> None:
        session = self.open_sessions.pop(worker_ctx, None)
        if session is not None:
            session.close()
