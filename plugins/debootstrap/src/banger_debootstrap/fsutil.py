"""Careful filesystem helpers for working on a root filesystem tree from the host.

A Debian tree contains absolute symlinks (``/etc/resolv.conf`` may point to
``/run/...``): followed from the host they would land in the *host's* files.
Every path the recipe names is therefore resolved with chroot semantics and
must stay inside the tree. And a failed debootstrap can leave ``proc``/``sys``
mounted inside the tree: those are unmounted before anything is deleted, and
deletion never crosses into another filesystem.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path, PurePosixPath

MAX_SYMLINKS = 40


class UnsafePathError(ValueError):
    """A guest path would resolve outside the root filesystem tree."""


def resolve_in_root(root: Path, guest: str, *, follow_last: bool = True) -> Path:
    """Resolve ``guest`` (absolute, inside the guest) to a host path under ``root``, as chroot would.

    Args:
        root: the tree's root directory.
        guest: absolute guest path.
        follow_last: resolve a symlink in the last component too.

    Raises:
        UnsafePathError: too many symlinks.
    """
    pending = list(PurePosixPath(guest).parts[1:])
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink() and (pending or follow_last):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise UnsafePathError(f"too many symlinks resolving {guest} in {root}")
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                resolved = []
                pending = list(target.parts[1:]) + pending
            else:
                pending = list(target.parts) + pending
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(path.resolve())
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(path: Path) -> None:
    """Unmount everything mounted inside ``path`` (lazily, deepest first)."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False, timeout=60)


def remove_tree(path: Path) -> None:
    """Delete ``path`` recursively, never descending into another filesystem.

    Raises:
        OSError: something is still mounted below ``path`` after unmounting.
    """
    if not path.exists() and not path.is_symlink():
        return
    unmount_all_under(path)
    if mounts_under(path):
        raise OSError(f"cannot delete {path}: filesystems are still mounted inside it")
    top = path.lstat()
    if not stat.S_ISDIR(top.st_mode):
        path.unlink()
        return
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        directory = Path(dirpath)
        for name in filenames:
            (directory / name).unlink()
        for name in dirnames:
            child = directory / name
            info = child.lstat()
            if stat.S_ISLNK(info.st_mode):
                child.unlink()
            elif info.st_dev == top.st_dev:
                child.rmdir()
    path.rmdir()


def tree_usage(root: Path) -> tuple[int, int]:
    """``(bytes in 4 KiB blocks, number of inodes)`` a copy of ``root`` needs on ext4."""
    blocks = 0
    inodes = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        inodes += 1
        blocks += 1
        for name in (*filenames, *dirnames):
            info = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISDIR(info.st_mode):
                continue  # counted when walked
            if info.st_nlink > 1:
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            inodes += 1
            if stat.S_ISREG(info.st_mode) or (stat.S_ISLNK(info.st_mode) and info.st_size >= 60):
                blocks += (info.st_size + 4095) // 4096
    return blocks * 4096, inodes
