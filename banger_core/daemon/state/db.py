"""Opening the state database: preflight, WAL, busy timeout, migrations.

The database is never deleted or rewritten to "recover": a file that is not a
readable banger database makes the daemon refuse to start with a sentence
saying what to do, and the file stays byte-for-byte as it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, create_engine

from banger_core.common.errors import StateError

BUSY_TIMEOUT_MS = 30_000

#: (version, statements). Append only: never edit a released migration.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE vms (
                id VARCHAR NOT NULL PRIMARY KEY,
                name VARCHAR NOT NULL UNIQUE,
                image VARCHAR NOT NULL,
                kernel VARCHAR NOT NULL,
                backend VARCHAR NOT NULL,
                network VARCHAR NOT NULL,
                vcpus INTEGER NOT NULL,
                memory_mib INTEGER NOT NULL,
                disk_size INTEGER NOT NULL,
                guest_ip VARCHAR UNIQUE,
                mac VARCHAR NOT NULL UNIQUE,
                state VARCHAR NOT NULL,
                created_at DATETIME NOT NULL,
                started_at DATETIME,
                last_error VARCHAR,
                remove_on_exit BOOLEAN NOT NULL DEFAULT 0,
                spec_sources JSON NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX ix_vms_name ON vms (name)",
            """CREATE TABLE images (
                name VARCHAR NOT NULL PRIMARY KEY,
                version VARCHAR NOT NULL,
                source VARCHAR NOT NULL,
                kernel_ref VARCHAR,
                sha256 VARCHAR NOT NULL,
                size INTEGER NOT NULL,
                created_at DATETIME NOT NULL,
                meta JSON NOT NULL DEFAULT '{}'
            )""",
            """CREATE TABLE kernels (
                ref VARCHAR NOT NULL PRIMARY KEY,
                version VARCHAR NOT NULL,
                provider VARCHAR NOT NULL,
                boot_protocol INTEGER NOT NULL,
                sha256 JSON NOT NULL DEFAULT '{}',
                created_at DATETIME NOT NULL,
                meta JSON NOT NULL DEFAULT '{}'
            )""",
        ),
    ),
    # --host-access (usernet): without it QEMU isolates the guest from the host's loopback.
    (2, ("ALTER TABLE vms ADD COLUMN host_access BOOLEAN NOT NULL DEFAULT 0",)),
    # -p: ports published on 127.0.0.1, kept with the VM so each boot publishes the same host ports.
    (3, ("ALTER TABLE vms ADD COLUMN ports JSON NOT NULL DEFAULT '[]'",)),
    # image show: the reference an image was pulled by, and the digest it resolved to (OCI), so a second
    # pull of a registry tag can answer "already present" from one manifest request.
    (4, ("ALTER TABLE images ADD COLUMN reference VARCHAR", "ALTER TABLE images ADD COLUMN digest VARCHAR")),
)


def _refuse(path: Path, why: str) -> StateError:
    return StateError(
        f"cannot use the state database {path}: {why}. banger leaves it untouched: "
        f"move it aside (mv {path} {path}.broken) to start with empty state, or restore a backup"
    )


def preflight(path: Path, latest: int) -> int:
    """Check an existing database read-only; return its schema version (0 = new/empty).

    Raises :class:`StateError` when the file is not a database, is damaged, or
    was written by a newer banger.
    """
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise _refuse(path, str(exc)) from None
    try:
        conn.execute("PRAGMA schema_version").fetchone()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return 0
        if "schema_migrations" not in tables:
            raise _refuse(path, "it is an SQLite file but not a banger database")
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        version = int(row[0] or 0)
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise _refuse(path, f"integrity check failed ({check[0] if check else 'no answer'})")
    except sqlite3.DatabaseError as exc:
        raise _refuse(path, str(exc)) from None
    finally:
        conn.close()
    if version > latest:
        raise StateError(
            f"the state database {path} has schema version {version}, newer than this banger knows ({latest}): "
            "upgrade banger (or use the banger that wrote it)"
        )
    return version


def _configure(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # pysqlite commits implicitly before DDL; take transaction control ourselves
    # (see _begin) so a migration's statements are applied all or nothing.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: Execution option marking a connection of :meth:`Database.read`.
READ_ONLY = "banger_read_only"


def _begin(conn: Connection) -> None:
    if conn.get_execution_options().get(READ_ONLY):
        # A deferred transaction reads a WAL snapshot and takes no lock a writer
        # holds, so reads never queue behind a write; query_only makes SQLite
        # refuse a write slipped into a read session instead of it taking the lock.
        conn.exec_driver_sql("PRAGMA query_only = ON")
        conn.exec_driver_sql("BEGIN")
        return
    # IMMEDIATE: take the write lock up front. A deferred transaction that reads
    # and then writes fails at once with "database is locked" (not after the busy
    # timeout) when another connection wrote in between.
    conn.exec_driver_sql("PRAGMA query_only = OFF")
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine, migrations: Sequence[tuple[int, Sequence[str]]] = MIGRATIONS) -> list[int]:
    """Apply pending migrations, each in its own transaction; return the versions applied."""
    applied: list[int] = []
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at DATETIME NOT NULL)"
        )
    for version, statements in migrations:
        with engine.begin() as conn:
            done = conn.exec_driver_sql("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).first()
            if done:
                continue
            for statement in statements:
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (version, datetime.now(UTC).isoformat()),
            )
        applied.append(version)
    return applied


@contextmanager
def _committing(bind: Engine) -> Iterator[Session]:
    with Session(bind, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


class Database:
    """The opened, migrated state database."""

    def __init__(self, path: Path, migrations: Sequence[tuple[int, Sequence[str]]] = MIGRATIONS) -> None:
        self.path = path
        latest = max(v for v, _ in migrations)
        self.version_before = preflight(path, latest)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.engine = create_engine(
            f"sqlite:///{path}",
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(self.engine, "connect", _configure)
        event.listen(self.engine, "begin", _begin)
        self.reader = self.engine.execution_options(**{READ_ONLY: True})
        self.applied = migrate(self.engine, migrations)
        path.chmod(0o600)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write session: takes the write lock at its first statement, commits on success,
        rolls back on error. Use :meth:`read` when nothing is written."""
        with _committing(self.engine) as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session on one consistent snapshot: it never waits for a writer."""
        with _committing(self.reader) as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
