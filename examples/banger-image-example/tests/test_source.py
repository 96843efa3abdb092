"""The dir: image source for real: a tree on disk, the real mkfs.ext4, the image read back with debugfs."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import ImageArtifact, ImageSourceDriver, PluginContext, SourceUnavailable
from banger_image_example import source
from banger_image_example.plugin import HEADROOM_KEY, banger_image_sources
from banger_image_example.source import DirImageError

DEBUGFS = "/usr/sbin/debugfs"


def dir_source(ctx: PluginContext) -> ImageSourceDriver:
    """The driver exactly as banger builds it: through the registration's factory."""
    (registered,) = banger_image_sources()
    return registered.factory(ctx)


def debugfs(image: Path, command: str) -> str:
    done = subprocess.run([DEBUGFS, "-R", command, str(image)], capture_output=True, text=True, check=True)
    return done.stdout


def inode(image: Path, path: str) -> dict[str, str]:
    """Mode, owner, link count and (for a short symlink) target of ``path`` inside ``image``."""
    text = debugfs(image, f"stat {path}")
    fields = dict(re.findall(r"(Mode|User|Group|Links|Inode):\s+(\S+)", text))
    target = re.search(r'Fast link dest: "(.*)"', text)
    if target:
        fields["target"] = target.group(1)
    return fields


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small root tree with what trips naive copiers: links out of the tree, hard links, setuid."""
    root = tmp_path / "trees" / "tiny"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("tiny\n")
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    tool = root / "usr" / "local" / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o4755)
    os.link(tool, tool.with_name("tool-again"))
    (root / "etc" / "host-secret").symlink_to("/etc/shadow")  # must stay a link, never the host's file
    (root / "srv" / "empty").mkdir(parents=True)
    return root


@pytest.fixture
def context(installed: dict[str, str]) -> PluginContext:
    return make_plugin_context(installed, {HEADROOM_KEY: 8 << 20})


def pull(ctx: PluginContext, ref: str, dest: Path) -> ImageArtifact:
    dest.mkdir()
    return dir_source(ctx).pull(ref, dest, RecordingProgress())


@pytest.mark.unit
def test_claims_only_dir_references(context: PluginContext) -> None:
    driver = dir_source(context)
    assert driver.claims("dir:/srv/tree") and driver.claims("dir:relative")  # pull() explains the second
    assert not driver.claims("debian-bookworm") and not driver.claims("docker.io/library/alpine:3.20")
    assert driver.available() == []


@pytest.mark.unit
def test_pull_copies_the_tree_into_an_ext4_image(context: PluginContext, tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    progress = RecordingProgress()
    artifact = dir_source(context).pull(f"dir:{tree}", dest, progress)

    assert (artifact.name, artifact.kernel_ref, artifact.rootfs) == ("tiny", None, dest / "rootfs.ext4")
    assert sorted(p.name for p in dest.iterdir()) == ["rootfs.ext4"]
    assert artifact.sha256 == hashlib.sha256(artifact.rootfs.read_bytes()).hexdigest()
    assert artifact.size == artifact.rootfs.stat().st_size
    assert artifact.metadata["origin"] == f"dir:{tree}"
    assert progress.steps[0] == f"measuring the tree at {tree}"
    fsck = subprocess.run(["/usr/sbin/e2fsck", "-fn", str(artifact.rootfs)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    image = artifact.rootfs
    assert debugfs(image, "cat /etc/hostname") == "tiny\n"
    assert inode(image, "/")["User"] == "0"  # -E root_owner=0:0
    tool, again = inode(image, "/usr/local/bin/tool"), inode(image, "/usr/local/bin/tool-again")
    assert tool["Mode"] == "04755" and tool["Links"] == "2" and tool["Inode"] == again["Inode"]
    # The owner caveat (README): files keep the owner they have on the host.
    assert (tool["User"], tool["Group"]) == (str(os.getuid()), str(os.getgid()))
    assert inode(image, "/etc/host-secret")["target"] == "/etc/shadow"
    assert "empty" in debugfs(image, "ls /srv")


@pytest.mark.unit
def test_headroom_is_free_space_in_the_image(installed: dict[str, str], tree: Path, tmp_path: Path) -> None:
    sizes = {}
    for headroom in (16 << 20, 48 << 20):
        ctx = make_plugin_context(installed, {HEADROOM_KEY: headroom})
        image = pull(ctx, f"dir:{tree}", tmp_path / f"dest-{headroom}").rootfs
        superblock = debugfs(image, "stats")
        free_blocks = re.search(r"^Free blocks:\s+(\d+)$", superblock, re.MULTILINE)
        assert free_blocks is not None and int(free_blocks.group(1)) * 4096 >= headroom
        sizes[headroom] = image.stat().st_size
    assert sizes[48 << 20] - sizes[16 << 20] == 32 << 20


@pytest.mark.unit
def test_version_changes_with_the_tree_only(context: PluginContext, tree: Path, tmp_path: Path) -> None:
    versions = []
    for attempt in range(3):
        if attempt == 2:
            (tree / "etc" / "hostname").write_text("changed\n")
        versions.append(pull(context, f"dir:{tree}", tmp_path / f"dest-{attempt}").version)
    assert versions[0] == versions[1] != versions[2]
    assert re.fullmatch(r"tree-[0-9a-f]{12}", versions[0])


def bad_refs(tmp_path: Path, tree: Path) -> dict[str, tuple[str, str]]:
    """Reference → (a piece of the one-line error, the fix it suggests)."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "link-to-tree").symlink_to(tree)
    (tmp_path / "Bad Name").mkdir()
    return {
        "dir:": ("needs an absolute directory path", "use dir:/absolute/path/to/tree"),
        "dir:trees/tiny": ("needs an absolute directory path", "use dir:/absolute/path/to/tree"),
        f"dir:{tmp_path}/missing": ("does not exist", "give an existing directory"),
        f"dir:{tmp_path}/a-file": ("is not a directory", "give the directory holding"),
        f"dir:{tmp_path}/link-to-tree": ("is not the directory's real path", f"use dir:{tree}"),
        f"dir:{tree}/../tiny": ("is not the directory's real path", f"use dir:{tree}"),
        "dir:/": ("the host's whole root", "give the directory that holds"),
        f"dir:{tmp_path}/Bad Name": ("'Bad Name' becomes the image name", "use 1-64 characters"),
    }


@pytest.mark.unit
def test_bad_references_are_refused_in_one_line(context: PluginContext, tree: Path, tmp_path: Path) -> None:
    driver = dir_source(context)
    for ref, (problem, fix) in bad_refs(tmp_path, tree).items():
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(DirImageError) as caught:
            driver.pull(ref, dest, RecordingProgress())
        message = str(caught.value)
        assert problem in message and fix in message and "\n" not in message, (ref, message)
        assert list(dest.iterdir()) == [], ref  # nothing written
        dest.rmdir()


@pytest.mark.unit
def test_a_symlink_swapped_in_after_the_check_changes_nothing(
    context: PluginContext, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    (other / "etc").mkdir(parents=True)
    (other / "etc" / "hostname").write_text("someone else's tree\n")
    real_measure = source.measure

    def swap_then_measure(fd: int) -> source.TreeUsage:
        # Between the checks and mkfs: the checked directory moves away and a symlink takes its place.
        tree.rename(tree.with_name("moved"))
        tree.symlink_to(other)
        return real_measure(fd)

    monkeypatch.setattr(source, "measure", swap_then_measure)
    image = pull(context, f"dir:{tree}", tmp_path / "dest").rootfs
    assert tree.is_symlink()
    assert debugfs(image, "cat /etc/hostname") == "tiny\n"  # the directory that was checked, not the link's target


@pytest.mark.unit
def test_refuses_a_tree_holding_the_image_store(context: PluginContext, tree: Path) -> None:
    dest = tree / "srv" / "store"  # dir:/ or dir:$HOME would copy banger's own store into the image
    dest.mkdir()
    with pytest.raises(DirImageError, match="contains banger's image store"):
        dir_source(context).pull(f"dir:{tree}", dest, RecordingProgress())
    assert list(dest.iterdir()) == []


@pytest.mark.unit
def test_without_mkfs_the_source_is_unavailable(
    context: PluginContext, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source, "MKFS_SEARCH_PATH", str(tmp_path / "nothing"))
    (tmp_path / "dest").mkdir()
    with pytest.raises(SourceUnavailable, match="apt-get install e2fsprogs"):
        dir_source(context).pull(f"dir:{tree}", tmp_path / "dest", RecordingProgress())


@pytest.mark.unit
def test_a_failing_mkfs_is_one_line(
    context: PluginContext, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "mkfs.ext4"  # what a real mkfs failure prints, e.g. on a full disk
    fake.parent.mkdir()
    failure = "__populate_fs: Could not allocate block in ext2 filesystem"
    fake.write_text(f"#!/bin/sh\necho 'mke2fs 1.47.0'\necho '{failure}' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(source, "MKFS_SEARCH_PATH", str(fake.parent))
    (tmp_path / "dest").mkdir()
    with pytest.raises(DirImageError) as caught:
        dir_source(context).pull(f"dir:{tree}", tmp_path / "dest", RecordingProgress())
    assert str(caught.value) == f"mkfs.ext4 failed: {failure}"
