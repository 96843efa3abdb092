"""A full disk under the state directory: operations fail with an error, nothing half-made stays, nothing is lost."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.common.errors import BangerError
from tests.integration.test_daemon import prepare
from tests.support.daemon import DaemonHarness


@pytest.fixture
def small_disk(daemon: DaemonHarness, tmp_path: Path) -> Iterator[Path]:
    """The daemon's state directory on its own 48 MiB tmpfs (unmounted afterwards)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48M,mode=0700", "tmpfs", str(mount)], check=True)
    daemon.env["XDG_DATA_HOME"] = str(mount)
    try:
        yield mount
    finally:
        daemon.stop()
        unmount(mount)


def unmount(mount: Path) -> None:
    """Unmount, giving processes that are exiting (the daemon, a VM's log pump) a moment to close their files."""
    for _ in range(50):
        if subprocess.run(["umount", str(mount)], stderr=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # never leave the tmpfs behind


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no space left."""
    filler = directory / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_create_and_pull_on_a_full_disk_leave_nothing_half_made(daemon: DaemonHarness, small_disk: Path) -> None:
    prepare(daemon)
    client = daemon.client()
    rootfs = daemon.state / "images" / "fake-tiny" / "rootfs.ext4"
    before = sha256(rootfs)
    filler = fill(small_disk)
    with pytest.raises(BangerError):
        client.vms.create(name="nospace", backend="fakevmm", start=False)
    with pytest.raises(BangerError):
        client.images.pull("fake-tiny", force=True)
    os.unlink(filler)
    # Nothing half-made is left, the image is intact, and with space back everything works.
    assert client.vms.list() == []
    assert not (daemon.state / "vms").exists() or list((daemon.state / "vms").iterdir()) == []
    assert sorted(p.name for p in (daemon.state / "images").iterdir()) == ["fake-tiny"]
    assert sha256(rootfs) == before
    assert client.vms.create(name="roomy", backend="fakevmm", start=False).state == "created"
