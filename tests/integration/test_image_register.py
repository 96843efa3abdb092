"""`banger image register` through the real daemon and CLI: adopt, list, show, refuse, delete; the file untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.register.tests.ext4_kit import Fingerprint, make_ext4
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent
#: A hang guard, not a measurement: every call below answers in about a second when it works.
HANG = 60


def banger(h: DaemonHarness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "banger"), *args], env=h.env, capture_output=True, text=True, check=False, timeout=HANG
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    # Progress lines ("==> checking PATH") may come first; the error is one line, the last.
    assert [line for line in lines if "error" in line] == lines[-1:], result.stderr
    return lines[-1]


def store_entries(h: DaemonHarness) -> list[str]:
    images = h.state / "images"
    return sorted(p.name for p in images.iterdir()) if images.exists() else []


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own: another file system than the store's, so a hard link cannot reach it."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_register_hard_links_lists_shows_and_deletes_without_touching_the_file(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    rootfs = make_ext4(tmp_path / "base.ext4")
    before = Fingerprint.of(rootfs)

    result = banger(
        daemon, "image", "register", "--name", "base", "--rootfs", str(rootfs), "--kernel-ref", "fake-kernel"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"base: registered from {rootfs} (16M, kernel fake-kernel)"

    (listed,) = json.loads(banger(daemon, "image", "list", "--json").stdout)
    assert (listed["name"], listed["source"], listed["kernel_ref"]) == ("base", "register", "fake-kernel")
    assert listed["reference"] == f"register:{rootfs}" and listed["digest"] is None
    assert listed["sha256"] == before.sha256 and listed["meta"]["adopted_by"] == "hard link"
    stored = Path(listed["path"])
    assert os.stat(stored).st_ino == os.stat(rootfs).st_ino
    # The shared inode keeps the owner's mode: the store's 0444 is for files it owns alone.
    assert Fingerprint.of(rootfs) == before

    shown = banger(daemon, "image", "show", "base")
    assert shown.returncode == 0, shown.stderr
    fields = dict(line.split(None, 1) for line in shown.stdout.splitlines() if not line.startswith("created"))
    assert fields["source"].strip() == "register"
    assert fields["reference"].strip() == f"register:{rootfs}"
    assert fields["kernel"].strip() == "fake-kernel"
    assert fields["digest"].strip() == "-"
    assert json.loads(banger(daemon, "image", "show", "base", "--json").stdout) == listed

    deleted = banger(daemon, "image", "delete", "base")
    assert deleted.returncode == 0, deleted.stderr
    assert Fingerprint.of(rootfs) == before and os.stat(rootfs).st_nlink == 1


def test_a_file_on_another_file_system_is_copied_with_its_holes(daemon: DaemonHarness, tmpfs: Path) -> None:
    rootfs = make_ext4(tmpfs / "base.ext4", size_mib=48)
    before = Fingerprint.of(rootfs)
    image = daemon.client().images.register("copied", str(rootfs), kernel_ref="fake-kernel")
    stored = Path(image.path)
    assert image.meta["adopted_by"] == "copy" and image.sha256 == before.sha256
    assert stored.read_bytes() == rootfs.read_bytes()
    assert os.stat(stored).st_blocks * 512 < 24 << 20  # an empty ext4: mostly holes, kept as holes
    assert os.stat(stored).st_mode & 0o777 == 0o444  # banger's own copy: read-only like every stored image
    assert Fingerprint.of(rootfs) == before


def test_name_clash_relative_path_and_bad_files_are_one_line_errors_and_create_nothing(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    rootfs = make_ext4(tmp_path / "base.ext4")
    other = make_ext4(tmp_path / "other.ext4")
    assert (
        banger(
            daemon, "image", "register", "--name", "base", "--rootfs", str(rootfs), "--kernel-ref", "fake-kernel"
        ).returncode
        == 0
    )
    entries = store_entries(daemon)
    before = Fingerprint.of(other)
    (tmp_path / "zeros").write_bytes(bytes(4096))

    clash = banger(daemon, "image", "register", "--name", "base", "--rootfs", str(other))
    assert one_line_error(clash) == (
        "banger: error: image 'base' already exists: pick another --name, or `banger image delete base` first"
    )
    relative = banger(daemon, "image", "register", "--name", "rel", "--rootfs", "other.ext4")
    assert one_line_error(relative) == (
        "banger: error: --rootfs 'other.ext4' is not an absolute path: give the file's full path"
    )
    not_ext4 = banger(daemon, "image", "register", "--name", "zeros", "--rootfs", str(tmp_path / "zeros"))
    assert one_line_error(not_ext4) == (
        f"banger: error: {tmp_path / 'zeros'} is not an ext4 file system (no superblock magic 0xEF53 at byte 1080): "
        "give an ext4 image file (mkfs.ext4, or `banger image export` of an image)"
    )
    stored = daemon.client().images.get("base").path  # what VMs of image base boot from
    own = banger(daemon, "image", "register", "--name", "again", "--rootfs", stored)
    assert one_line_error(own).startswith(f"banger: error: {stored} is one of banger's own files (under ")
    bad_name = banger(daemon, "image", "register", "--name", "../x", "--rootfs", str(other))
    assert "invalid image name" in one_line_error(bad_name).lower()

    assert [i.name for i in daemon.client().images.list()] == ["base"]
    assert store_entries(daemon) == entries
    assert Fingerprint.of(other) == before


def test_a_file_attached_to_a_loop_device_is_refused(daemon: DaemonHarness, tmp_path: Path) -> None:
    rootfs = make_ext4(tmp_path / "base.ext4")
    device = subprocess.run(
        ["losetup", "--find", "--show", "--read-only", str(rootfs)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        result = banger(daemon, "image", "register", "--name", "looped", "--rootfs", str(rootfs))
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    assert one_line_error(result) == (f"banger: error: {rootfs} is attached to {device}: `losetup -d {device}` first")
    assert daemon.client().images.list() == []


def test_a_plain_pull_of_a_register_reference_names_the_image_after_the_file(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    rootfs = make_ext4(tmp_path / "Team Base.ext4")
    pulled = banger(daemon, "image", "pull", f"register:{rootfs}", "--kernel-ref", "fake-kernel", "--json")
    assert pulled.returncode == 0, pulled.stderr
    image = json.loads(pulled.stdout)
    assert (image["name"], image["source"], image["used_source"]) == ("team-base", "register", "register")


def test_a_pull_never_silently_replaces_a_same_named_image_from_elsewhere(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    """Any source could name its image like another's (`x/debian:bookworm` is `debian-bookworm`): --force decides."""
    daemon.client().images.pull("fake-tiny")
    before = daemon.client().images.get("fake-tiny")
    rootfs = make_ext4(tmp_path / "fake-tiny.ext4")
    ref = f"register:{rootfs}"

    refused = banger(daemon, "image", "pull", ref, "--kernel-ref", "fake-kernel")
    assert one_line_error(refused) == (
        f"banger: error: image fake-tiny already exists from fake ({before.reference}): add --force to replace it "
        f"with {ref} from register, or `banger image delete fake-tiny` first"
    )
    assert daemon.client().images.get("fake-tiny") == before
    assert store_entries(daemon) == ["fake-tiny"], "the refused pull's staging is gone"

    forced = banger(daemon, "image", "pull", ref, "--kernel-ref", "fake-kernel", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["source"] == "register"
