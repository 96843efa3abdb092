"""The state database: migrations upgrade older files, newer and broken files are refused untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from banger_core.common.names import InvalidName, generate_vm_name, validate_vm_name
from banger_core.daemon.state.db import MIGRATIONS, Database, StateError
from banger_core.testing.state import schema_version


def test_fresh_database_gets_every_migration_wal_and_0600(tmp_path: Path) -> None:
    db = Database(tmp_path / "state" / "banger.db")
    assert db.applied == [v for v, _ in MIGRATIONS] and db.version_before == 0
    assert schema_version(db) == MIGRATIONS[-1][0]
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert (tmp_path / "state" / "banger.db").stat().st_mode & 0o777 == 0o600
    db.close()
    again = Database(tmp_path / "state" / "banger.db")
    assert again.applied == [] and again.version_before == MIGRATIONS[-1][0]


def test_a_newer_banger_upgrades_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "banger.db"
    old = Database(path)
    with old.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO images (name, version, source, sha256, size, created_at) "
            "VALUES ('debian-bookworm', '1', 'debootstrap', 'ab', 1, '2026-01-01')"
        )
    old.close()
    latest = MIGRATIONS[-1][0]
    newer = (*MIGRATIONS, (latest + 1, ("ALTER TABLE images ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT 0",)))
    upgraded = Database(path, migrations=newer)
    assert upgraded.version_before == latest and upgraded.applied == [latest + 1]
    with upgraded.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT name, pinned FROM images").one()
    assert tuple(row) == ("debian-bookworm", 0)


def test_vms_created_before_host_access_existed_come_back_isolated(tmp_path: Path) -> None:
    path = tmp_path / "banger.db"
    Database(path, migrations=MIGRATIONS[:1]).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO vms (id, name, image, kernel, backend, network, vcpus, memory_mib, disk_size, mac, state,"
            " created_at) VALUES ('ab', 'old', 'img', 'k', 'qemu', 'usernet', 1, 512, 1, 'm', 'stopped', '2026-01-01')"
        )
    Database(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT host_access FROM vms WHERE name = 'old'").fetchone() == (0,)


def test_a_failing_migration_is_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "banger.db"
    Database(path).close()
    broken = (*MIGRATIONS, (MIGRATIONS[-1][0] + 1, ("ALTER TABLE images ADD COLUMN ok INTEGER", "THIS IS NOT SQL")))
    with pytest.raises(Exception, match="syntax error"):
        Database(path, migrations=broken)
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(images)")]
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert "ok" not in columns and versions == [v for v, _ in MIGRATIONS]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"garbage" * 1000, "file is not a database"),
        (b"", None),
    ],
)
def test_preflight(tmp_path: Path, content: bytes, why: str | None) -> None:
    path = tmp_path / "banger.db"
    path.write_bytes(content)
    if why is None:  # an empty file is an empty database: fine
        Database(path).close()
        return
    with pytest.raises(StateError, match=why):
        Database(path)
    assert path.read_bytes() == content


def test_an_sqlite_file_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "banger.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    before = path.read_bytes()
    with pytest.raises(StateError, match="it is an SQLite file but not a banger database"):
        Database(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["a", "web-1", "x" * 63, "0day"])
def test_valid_vm_names(name: str) -> None:
    assert validate_vm_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 64, "-a", "a-", "A", "a_b", "a.b", "ä", "../x", None, 3])
def test_invalid_vm_names(name: object) -> None:
    with pytest.raises(InvalidName, match="invalid VM name"):
        validate_vm_name(name)


def test_generated_names_avoid_taken_ones() -> None:
    taken: set[str] = set()
    for _ in range(50):
        name = generate_vm_name(taken.__contains__)
        assert validate_vm_name(name) and name not in taken
        taken.add(name)


def test_concurrent_read_then_write_sessions_wait_instead_of_failing(tmp_path: Path) -> None:
    """Two sessions that read then write at the same time: the second waits for the lock
    (a deferred transaction would fail at once with "database is locked")."""
    import threading
    import time
    from datetime import UTC, datetime

    from banger_core.daemon.state.models import Image

    db = Database(tmp_path / "banger.db")
    with db.session() as s:
        s.add(Image(name="img", version="0", source="t", sha256="x", size=0, created_at=datetime.now(UTC)))
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            with db.session() as s:
                row = s.get(Image, "img")
                assert row is not None
                time.sleep(0.2)  # the other thread reads meanwhile
                row.size += 1
                s.add(row)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session() as s:
        assert s.get(Image, "img").size == 2  # type: ignore[union-attr]  # no lost update either


def test_a_read_returns_while_a_writer_holds_the_write_lock(tmp_path: Path) -> None:
    """Reads see the last committed snapshot and never queue behind a write transaction."""
    from datetime import UTC, datetime

    from sqlmodel import select

    from banger_core.daemon.state.models import Image

    path = tmp_path / "banger.db"
    db = Database(path)
    with db.session() as s:
        s.add(Image(name="committed", version="0", source="t", sha256="x", size=0, created_at=datetime.now(UTC)))
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO images (name, version, source, sha256, size, created_at) "
            "VALUES ('uncommitted', '0', 't', 'x', 0, '2026-01-01')"
        )
        # Same thread, writer still open: a read that waited for it would fail after the busy timeout.
        with db.read() as s:
            seen = [image.name for image in s.exec(select(Image)).all()]
        assert schema_version(db) == MIGRATIONS[-1][0]
        assert writer.in_transaction  # the read finished first
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert seen == ["committed"]
    with db.read() as s:
        assert sorted(image.name for image in s.exec(select(Image)).all()) == ["committed", "uncommitted"]


def test_a_read_session_cannot_write(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from banger_core.daemon.state.models import Image

    db = Database(tmp_path / "banger.db")
    with pytest.raises(Exception, match="attempt to write a readonly database"), db.read() as s:
        s.add(Image(name="sneaky", version="0", source="t", sha256="x", size=0, created_at=datetime.now(UTC)))
    with db.session() as s:  # the pooled connection is writable again in a write session
        s.add(Image(name="fine", version="0", source="t", sha256="x", size=0, created_at=datetime.now(UTC)))
    with db.read() as s:
        assert s.get(Image, "sneaky") is None and s.get(Image, "fine") is not None
