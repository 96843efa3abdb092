"""Checking a host file before banger adopts it as an image, then adopting it: a hard link, else a sparse copy.

Every check reads one descriptor, opened ``O_RDONLY | O_NOFOLLOW`` after an
``lstat`` said the path is a regular file (so a FIFO or a device is never
opened) and compared with that ``lstat`` afterwards. A copy is made from that
descriptor; a hard link is made by path, then checked to be that same inode
(and removed if it is not), so a file swapped in after the checks is never the
one adopted. Nothing here opens the file for writing or changes its metadata:
its bytes, mode and mtime stay as they were.

"In use" means, as far as this process can see:

* mounted, or not cleanly unmounted: the ext4 superblock's ``needs_recovery``
  flag (set while a journaled file system is mounted read-write), or a clear
  "valid" bit / a set "errors" bit in ``s_state``;
* open for writing by a process: ``/proc/PID/fdinfo`` of every process whose
  ``/proc/PID/fd`` this process may read (all of them when the daemon runs as
  root, its own user's otherwise);
* the backing file of a loop device (``/sys/block/loop*/loop/backing_file``);
* one of banger's own files (anything under its state directory: a VM's disk,
  a stored image), which banger hands out through ``image export`` instead.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from banger_hookspecs import ImageRefused, Progress

SUPERBLOCK_OFFSET = 1024
#: Field offsets inside the ext2/3/4 superblock (the magic is at byte 1080 of the file).
S_MAGIC, S_STATE, S_FEATURE_INCOMPAT = 0x38, 0x3A, 0x60
EXT4_MAGIC = 0xEF53
STATE_VALID, STATE_ERRORS = 0x1, 0x2
INCOMPAT_RECOVER = 0x4
CHUNK = 1 << 20
#: Errors of link() that mean "this file cannot be linked here": copy it instead.
_COPY_INSTEAD_OF_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES})
#: Errors of copy_file_range() that mean "not between these files": read and write instead.
_PLAIN_COPY = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF})


@dataclass(frozen=True)
class CheckedFile:
    """An ext4 file that passed every check, open read-only."""

    path: str
    fd: int
    stat: os.stat_result


@contextmanager
def open_checked(path: str, state_dir: Path) -> Iterator[CheckedFile]:
    """Open ``path`` read-only after checking it (see the module docstring); :class:`ImageRefused` says why not."""
    if not os.path.isabs(path):
        raise ImageRefused(f"{path!r} is not an absolute path: give the file's full path")
    try:
        before = os.lstat(path)
    except OSError as exc:
        raise ImageRefused(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISLNK(before.st_mode):
        raise ImageRefused(f"{path} is a symbolic link: give the path of the file itself ({os.path.realpath(path)})")
    if not stat.S_ISREG(before.st_mode):
        raise ImageRefused(f"{path} is not a regular file: give the path of an ext4 image file")
    state = os.path.realpath(state_dir)
    if os.path.commonpath([os.path.realpath(path), state]) == state:
        raise ImageRefused(
            f"{path} is one of banger's own files (under {state}): `banger image export NAME` makes a copy of an image"
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ImageRefused(f"cannot read {path}: {exc.strerror}") from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise ImageRefused(f"{path} was replaced while banger checked it: register it again")
        _check_superblock(path, fd)
        _check_not_in_use(path, opened)
        yield CheckedFile(path, fd, opened)
    finally:
        os.close(fd)


def _check_superblock(path: str, fd: int) -> None:
    block = os.pread(fd, 1024, SUPERBLOCK_OFFSET)
    if len(block) < S_FEATURE_INCOMPAT + 4 or struct.unpack_from("<H", block, S_MAGIC)[0] != EXT4_MAGIC:
        raise ImageRefused(
            f"{path} is not an ext4 file system (no superblock magic 0xEF53 at byte 1080): "
            "give an ext4 image file (mkfs.ext4, or `banger image export` of an image)"
        )
    (state,) = struct.unpack_from("<H", block, S_STATE)
    (incompat,) = struct.unpack_from("<I", block, S_FEATURE_INCOMPAT)
    if incompat & INCOMPAT_RECOVER or not state & STATE_VALID:
        raise ImageRefused(
            f"{path} is mounted, or was not cleanly unmounted (its superblock says so): "
            f"unmount it, then run `e2fsck -f {path}`"
        )
    if state & STATE_ERRORS:
        raise ImageRefused(f"{path} has file system errors recorded: run `e2fsck -f {path}` first")


def _check_not_in_use(path: str, opened: os.stat_result) -> None:
    same = (opened.st_dev, opened.st_ino)
    writers = [who for who, mode in _openers(same) if mode in (os.O_WRONLY, os.O_RDWR)]
    if writers:
        raise ImageRefused(
            f"{path} is open for writing by {', '.join(sorted(set(writers)))}: stop it (a running VM, a build) first"
        )
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            target = backing.read_text().strip().removesuffix(" (deleted)")
            linked = os.stat(target)
        except OSError:
            continue
        if (linked.st_dev, linked.st_ino) == same:
            device = backing.parent.parent.name
            raise ImageRefused(f"{path} is attached to /dev/{device}: `losetup -d /dev/{device}` first")


def _openers(same: tuple[int, int]) -> Iterator[tuple[str, int]]:
    """``("qemu-system-x86 (pid 42)", O_RDWR)`` for every descriptor of file ``same`` this process can see."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = os.listdir(proc / "fd")
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                target = os.stat(proc / "fd" / fd)
                if (target.st_dev, target.st_ino) != same:
                    continue
                info = (proc / "fdinfo" / fd).read_text()
                comm = (proc / "comm").read_text().strip()
            except OSError:
                continue
            flags = next((line.split()[1] for line in info.splitlines() if line.startswith("flags:")), "0")
            yield f"{comm} (pid {proc.name})", int(flags, 8) & os.O_ACCMODE


def adopt(source: CheckedFile, target: Path, progress: Progress) -> str:
    """Put ``source`` at ``target``: ``"hard link"`` when the file system allows it, else ``"copy"`` (sparse)."""
    try:
        os.link(source.path, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _COPY_INSTEAD_OF_LINK:
            raise
    else:
        linked = os.lstat(target)
        if (linked.st_dev, linked.st_ino) == (source.stat.st_dev, source.stat.st_ino):
            return "hard link"
        # The path names another file than the one checked (swapped since): adopt nothing of it.
        target.unlink()
        raise ImageRefused(f"{source.path} was replaced while banger checked it: register it again")
    progress.step(f"copying {source.path} (another file system: a hard link cannot cross it)")
    sparse_copy(source.fd, source.stat.st_size, target, progress)
    return "copy"


def sparse_copy(fd: int, size: int, target: Path, progress: Progress) -> None:
    """Copy the first ``size`` bytes of ``fd`` to a new file ``target``, writing only its data extents."""
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            _copy_range(fd, out, start, end)
            offset = end
            progress.advance(offset, size)
        os.ftruncate(out, size)
        os.fsync(out)
    finally:
        os.close(out)


def _copy_range(fd: int, out: int, start: int, end: int) -> None:
    position = start
    while position < end:
        try:
            copied = os.copy_file_range(fd, out, min(end - position, 64 * CHUNK), position, position)
        except OSError as exc:
            if exc.errno not in _PLAIN_COPY:
                raise
            copied = os.pwrite(out, os.pread(fd, min(end - position, CHUNK), position), position)
        if copied == 0:  # the file shrank under us
            raise ImageRefused(
                f"the file became shorter while banger copied it (at byte {position}): register it again"
            )
        position += copied


def sha256_of(fd: int, progress: Progress) -> str:
    """SHA-256 of the whole file behind ``fd`` (read with pread: the descriptor's offset is left alone)."""
    digest = hashlib.sha256()
    size = os.fstat(fd).st_size
    position = 0
    while chunk := os.pread(fd, CHUNK, position):
        digest.update(chunk)
        position += len(chunk)
        if position % (256 * CHUNK) == 0:
            progress.advance(position, size)
    return digest.hexdigest()
