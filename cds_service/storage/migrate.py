"""Schema migrations (Alembic): `ivig-cds db upgrade`, or at start-up with IVIG_CDS_DB_MIGRATE.

Several replicas may start at the same moment on one empty database, so an upgrade runs under a
lock that only one holder gets at a time: a PostgreSQL advisory lock held by the migrating
transaction (DDL is transactional there), or an exclusive file lock beside a SQLite file. The
second replica waits, then finds the schema at head and does nothing.

A database made by `create_all` before migrations existed has the tables and no version: it is
stamped at the baseline revision (0001) and upgraded from there.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"
# any fixed 64-bit number: the advisory lock every replica takes to migrate (PostgreSQL)
PG_LOCK_KEY = 0x1C1DC_D5


class SchemaOutOfDate(RuntimeError):
    """The database is not at the code's schema and start-up was told not to migrate."""


def _config(conn: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    script = ScriptDirectory.from_config(_config())
    rev = script.get_current_head()
    assert rev is not None
    return rev


def current(engine: Engine) -> str | None:
    """The database's revision (None: empty, or made by create_all before migrations)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _sqlite_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:" or not Path(database).parent.is_dir():
        yield  # nothing to share a lock with; SQLite itself reports a directory that is missing
        return
    with open(f"{database}.migrate-lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        yield


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Bring the schema to `revision` (default: head) under the migration lock; the revision."""
    sqlite = engine.dialect.name == "sqlite"
    with _sqlite_lock(engine) if sqlite else contextlib.nullcontext(), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        cfg = _config(conn)
        tables = set(sa.inspect(conn).get_table_names())
        if "evaluations" in tables and "alembic_version" not in tables:
            command.stamp(cfg, BASELINE)  # a create_all database: its tables are revision 0001
        command.upgrade(cfg, revision)
        rev = MigrationContext.configure(conn).get_current_revision()
    return rev or ""


def check(engine: Engine) -> None:
    """Start-up without migrating: refuse a schema that is not the code's."""
    have, want = current(engine), head()
    if have != want:
        raise SchemaOutOfDate(
            f"schema is at revision {have or 'none'}, this version needs {want}: "
            "run `ivig-cds db upgrade` (or set IVIG_CDS_DB_MIGRATE=true)"
        )
