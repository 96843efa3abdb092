"""The ``dir:PATH`` image source: a local directory tree becomes ``rootfs.ext4``.

``mkfs.ext4 -d`` copies the tree into a new filesystem image without mounting
anything, so no root is needed. The directory is opened once and checked
through that descriptor; mkfs reads it through ``/proc/self/fd/N``, so a
symlink swapped in after the check cannot redirect it to another tree.

Owners are copied as they are on the host (only the image's root directory is
made ``0:0`` by ``-E root_owner=0:0``): a tree unpacked by an ordinary user is
owned by that user inside the guest too. See the README.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from banger_hookspecs import ImageArtifact, ImageListing, PluginContext, Progress, SourceUnavailable
from banger_hookspecs.names import IMAGE_NAME_RULE, is_image_name
from banger_image_example.plugin import HEADROOM_KEY

PREFIX = "dir:"
#: Where mkfs.ext4 is looked for: sbin is often not on a non-root user's PATH.
MKFS_SEARCH_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
#: ``mkfs.ext4 -d`` appeared in e2fsprogs 1.43.
MKFS_MIN_VERSION = (1, 43)
MKFS_TIMEOUT = 30 * 60
BLOCK = 4096
#: Bitmaps, group descriptors and the root directory of a small filesystem, plus slack for big ones.
METADATA = 8 << 20
#: Symlink targets shorter than this live in the inode itself and take no block.
INLINE_SYMLINK = 60
INODE_SIZE = 256


class DirImageError(ValueError):
    """A ``dir:`` reference or tree this source cannot turn into an image; the message is one user sentence."""


def find_mkfs() -> str | None:
    """The mkfs.ext4 program, or None when e2fsprogs is not installed."""
    return shutil.which("mkfs.ext4", path=MKFS_SEARCH_PATH)


def mkfs_version(mkfs: str) -> tuple[int, ...] | None:
    """e2fsprogs' version from ``mkfs.ext4 -V`` (``mke2fs 1.47.0 (5-Feb-2023)``), or None if unreadable."""
    try:
        out = subprocess.run([mkfs, "-V"], capture_output=True, text=True, timeout=10, env={"LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    words = (out.stdout + out.stderr).split()
    if len(words) < 2 or words[0] != "mke2fs":
        return None
    try:
        return tuple(int(part) for part in words[1].split("."))
    except ValueError:
        return None


def tree_path(ref: str) -> str:
    """The absolute path in ``dir:PATH``, or :class:`DirImageError` saying what to write instead."""
    if not ref.startswith(PREFIX):
        raise DirImageError(f"{ref!r} is not a dir: reference: use dir:/absolute/path/to/tree")
    path = ref.removeprefix(PREFIX)
    if not path or "\0" in path or not os.path.isabs(path):
        raise DirImageError(f"{ref!r} needs an absolute directory path: use dir:/absolute/path/to/tree")
    return path


@contextmanager
def open_tree(path: str) -> Iterator[tuple[int, str]]:
    """Open directory ``path`` once; yield its descriptor and its real path.

    Refuses a path that is not the directory's real path (a symlink anywhere
    on the way, ``.``, ``..`` or doubled slashes): the image is named after the
    directory, and what was checked must be what gets copied.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DirImageError(f"dir:{path} does not exist: give an existing directory") from None
    except NotADirectoryError:
        raise DirImageError(f"dir:{path} is not a directory: give the directory holding the image's tree") from None
    except PermissionError:
        raise DirImageError(f"dir:{path} cannot be read by the banger daemon's user: check its permissions") from None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real != (path.rstrip("/") or "/"):
            raise DirImageError(
                f"dir:{path} is not the directory's real path (a symlink, '.' or '..' on the way): use dir:{real}"
            )
        yield fd, real
    finally:
        os.close(fd)


def image_name(real: str) -> str:
    """The image name: the directory's own name, which must be a valid banger image name."""
    if real == "/":
        raise DirImageError("dir:/ is the host's whole root: give the directory that holds the image's tree")
    name = os.path.basename(real)
    if not is_image_name(name):
        raise DirImageError(f"directory name {name!r} becomes the image name and is not valid: {IMAGE_NAME_RULE}")
    return name


@dataclass(frozen=True)
class TreeUsage:
    """What a tree needs in an ext4 image, and a fingerprint that changes when the tree does."""

    data_bytes: int
    inodes: int
    fingerprint: str


def _blocks(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def measure(fd: int) -> TreeUsage:
    """Walk the tree under ``fd`` without following symlinks: space, inodes, fingerprint.

    The fingerprint hashes every entry's name, type, mode, owner, size and
    mtime (not contents: reading a big tree twice is what mkfs is for).
    """
    digest = hashlib.sha256()
    seen: set[tuple[int, int]] = set()
    data, inodes = BLOCK, 1  # the root directory
    for top, dirs, files, dir_fd in os.fwalk(".", dir_fd=fd):
        dirs.sort()  # fwalk descends in this order: the fingerprint must not depend on readdir order
        for name in sorted(dirs + files):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            line = f"{top}/{name}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0{st.st_size}\0{st.st_mtime_ns}\n"
            digest.update(line.encode(errors="surrogateescape"))
            if (st.st_dev, st.st_ino) in seen:
                continue  # another name for a file already counted (a hard link)
            seen.add((st.st_dev, st.st_ino))
            inodes += 1
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                data += _blocks(max(st.st_size, 1))
            elif stat.S_ISLNK(st.st_mode) and st.st_size >= INLINE_SYMLINK:
                data += BLOCK
    return TreeUsage(data, inodes, digest.hexdigest())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def image_geometry(usage: TreeUsage, headroom: int) -> tuple[int, int]:
    """Image size (whole MiB) and inode count for a tree: its content, ext4's metadata, then ``headroom`` free."""
    inodes = usage.inodes + usage.inodes // 4 + 64  # a little room for files added in the guest
    size = usage.data_bytes + usage.data_bytes // 50 + inodes * INODE_SIZE + METADATA + headroom
    return (size + (1 << 20) - 1) >> 20 << 20, inodes


def make_ext4(mkfs: str, tree_fd: int, image: Path, size: int, inodes: int, label: str, progress: Progress) -> None:
    """Create ``image`` (``size`` bytes, sparse) holding the tree open at ``tree_fd``."""
    with image.open("xb") as fh:
        fh.truncate(size)
    argv = [mkfs, "-q", "-F", "-b", str(BLOCK), "-N", str(inodes), "-m", "0", "-L", label[:16]]
    # No journal: banger mounts an image read-only (VMs write to their own overlay disk).
    argv += ["-O", "^has_journal", "-E", "root_owner=0:0", "-d", f"/proc/self/fd/{tree_fd}", str(image)]
    try:
        done = subprocess.run(
            argv,
            pass_fds=(tree_fd,),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=MKFS_TIMEOUT,
            env={"LC_ALL": "C", "PATH": MKFS_SEARCH_PATH},
        )
    except subprocess.TimeoutExpired:
        raise DirImageError(f"mkfs.ext4 took more than {MKFS_TIMEOUT // 60} minutes") from None
    for line in (done.stdout + done.stderr).splitlines():
        progress.log(line)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise DirImageError(f"mkfs.ext4 failed: {lines[-1]}")


class DirSource:
    """The driver behind the ``dir`` image source (an :class:`~banger_hookspecs.ImageSourceDriver`)."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    def claims(self, ref: str) -> bool:
        """Every ``dir:`` reference; :meth:`pull` explains what is wrong with a bad one."""
        return ref.startswith(PREFIX)

    def available(self) -> list[ImageListing]:
        """Nothing to list: any directory on the host can be pulled."""
        return []

    def pull(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        """Write ``dest/rootfs.ext4`` from the tree ``ref`` names; ``dest`` is the empty dir the core gave us."""
        path = tree_path(ref)
        mkfs = find_mkfs()
        if mkfs is None:
            raise SourceUnavailable("mkfs.ext4 is not installed: apt-get install e2fsprogs")
        headroom: int = self.ctx.config[HEADROOM_KEY]
        image = dest / "rootfs.ext4"
        with open_tree(path) as (fd, real):
            name = image_name(real)
            if os.path.commonpath([real, os.path.realpath(dest)]) == real:
                raise DirImageError(f"dir:{real} contains banger's image store: give a directory outside {real}")
            progress.step(f"measuring the tree at {real}")
            usage = measure(fd)
            size, inodes = image_geometry(usage, headroom)
            progress.step(f"writing a {size >> 20} MiB ext4 image ({usage.inodes} files and directories)")
            make_ext4(mkfs, fd, image, size, inodes, name, progress)
        return ImageArtifact(
            name=name,
            version=f"tree-{usage.fingerprint[:12]}",
            rootfs=image,
            kernel_ref=None,  # banger's default kernel
            sha256=sha256_file(image),
            size=image.stat().st_size,
            metadata={"origin": f"dir:{real}", "tree_inodes": usage.inodes, "headroom": headroom},
        )
