"""A minimal writer for the ``newc`` cpio format the kernel unpacks as an initramfs.

Written in Python rather than driving ``cpio``, so the archive can hold
root-owned files and a ``/dev/console`` node without root, and so it is
byte-for-byte reproducible (fixed mtimes, inode numbers and order).
"""

from __future__ import annotations

import stat
from typing import BinaryIO

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


class CpioWriter:
    """Append entries to a newc archive; call :meth:`close` to write the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._inode = 0
        self._offset = 0
        self._names: set[str] = set()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _pad(self) -> None:
        self._write(b"\0" * (-self._offset % 4))

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/") or "."
        if name != _TRAILER:
            if ".." in name.split("/") or "\0" in name:
                raise ValueError(f"refusing cpio member name {name!r}")
            if name in self._names:
                raise ValueError(f"cpio member {name!r} written twice")
            self._names.add(name)
        self._inode += 1
        encoded = name.encode() + b"\0"
        fields = (
            self._inode,
            mode,
            0,  # uid: everything in banger's initramfs belongs to root
            0,  # gid
            2 if stat.S_ISDIR(mode) else 1,
            0,  # mtime: fixed for reproducible archives
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        self._write(_MAGIC + b"".join(f"{value:08x}".encode() for value in fields))
        self._write(encoded)
        self._pad()
        self._write(data)
        self._pad()

    def directory(self, name: str, mode: int = 0o755) -> None:
        """Add a directory."""
        self._entry(name, stat.S_IFDIR | mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file with ``data``."""
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        """Add a symlink ``name`` → ``target``."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node (e.g. ``dev/console`` 5:1)."""
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer entry; the archive is complete afterwards."""
        self._entry(_TRAILER, 0)
