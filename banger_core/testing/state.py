"""Looking into the state database from tests."""

from __future__ import annotations

from banger_core.daemon.state.db import Database


def schema_version(db: Database) -> int:
    """The newest migration recorded in ``db`` (0 before any), read through its read-only engine."""
    with db.reader.connect() as conn:
        row = conn.exec_driver_sql("SELECT MAX(version) FROM schema_migrations").first()
        return int(row[0]) if row and row[0] is not None else 0
