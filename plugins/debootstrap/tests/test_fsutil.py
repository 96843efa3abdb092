"""Working on a root tree from the host without ever touching the host's own files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress
from banger_debootstrap.build import run_step, write_file
from banger_debootstrap.fsutil import UnsafePathError, mounts_under, remove_tree, resolve_in_root, tree_usage
from banger_debootstrap.recipe import Step


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for directory in ("etc", "usr/lib", "run", "var/log"):
        (root / directory).mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    return root


@pytest.mark.unit
def test_absolute_symlinks_resolve_inside_the_tree(tree: Path) -> None:
    (tree / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    (tree / "etc/up").symlink_to("../../../../../../etc")
    assert resolve_in_root(tree, "/etc/resolv.conf") == tree / "run/systemd/resolve/stub-resolv.conf"
    assert resolve_in_root(tree, "/etc/resolv.conf", follow_last=False) == tree / "etc/resolv.conf"
    assert resolve_in_root(tree, "/lib/banger/x") == tree / "usr/lib/banger/x"
    assert resolve_in_root(tree, "/etc/up/passwd") == tree / "etc/passwd"  # '..' stops at the tree's root


@pytest.mark.unit
def test_symlink_loops_are_refused(tree: Path) -> None:
    (tree / "etc/a").symlink_to("/etc/b")
    (tree / "etc/b").symlink_to("/etc/a")
    with pytest.raises(UnsafePathError, match="too many symlinks"):
        resolve_in_root(tree, "/etc/a/x")


@pytest.mark.unit
def test_write_file_replaces_a_symlink_instead_of_following_it(tree: Path, tmp_path: Path) -> None:
    host_file = tmp_path / "host-resolv.conf"
    host_file.write_text("host data\n")
    (tree / "etc/resolv.conf").symlink_to(host_file)
    write_file(tree, "/etc/resolv.conf", b"", 0o644)
    assert host_file.read_text() == "host data\n"
    assert not (tree / "etc/resolv.conf").is_symlink() and (tree / "etc/resolv.conf").read_bytes() == b""


@pytest.mark.unit
def test_write_file_through_an_escaping_parent_stays_inside(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "etc/systemd").symlink_to(outside)  # absolute: means <tree>/<outside> in the guest
    write_file(tree, "/etc/systemd/x.conf", b"data", 0o600)
    assert list(outside.iterdir()) == []
    written = tree / str(outside).lstrip("/") / "x.conf"
    assert written.read_bytes() == b"data" and written.stat().st_mode & 0o777 == 0o600


@pytest.mark.unit
def test_remove_step_never_follows_links_out(tree: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    (tree / "var/log/dpkg.log").write_text("log")
    (tree / "var/log/link").symlink_to(victim)
    (tree / "var/link").symlink_to(victim)
    run_step(tree, Step("remove", paths=("/var/log/*", "/var/link/keep")), RecordingProgress())
    assert list((tree / "var/log").iterdir()) == []
    assert (victim / "keep").read_text() == "x"  # /var/link/keep resolved to <tree>/<victim>/keep, absent


@pytest.mark.unit
def test_tree_usage_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10000)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/short").symlink_to("a")
    used, inodes = tree_usage(tmp_path)
    assert used == 3 * 4096 + 2 * 4096  # a's three blocks (b is the same inode) + one per directory
    assert inodes == 4  # root, d, a(=b), short


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_remove_tree_unmounts_first_and_never_crosses_filesystems(tree: Path) -> None:
    mount_point = tree / "proc"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)], check=True)
    try:
        (mount_point / "inside").write_text("x")
        assert mounts_under(tree) == [mount_point]
        remove_tree(tree)
        assert not tree.exists()
        assert mounts_under(tree.parent) == []
    finally:
        if mounts_under(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
