"""Real ext4 files for the register tests (mkfs.ext4 from e2fsprogs; no root needed)."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUPERBLOCK = 1024


def make_ext4(path: Path, size_mib: int = 16) -> Path:
    """A sparse ``size_mib`` MiB file holding an empty, cleanly unmounted ext4 with a journal."""
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "test", str(path)], check=True, capture_output=True, timeout=60)
    return path


def poke_superblock(path: Path, offset: int, fmt: str, value: int) -> None:
    """Set one superblock field of the test's own file (as a crash or a mount would have left it)."""
    with open(path, "r+b") as f:
        f.seek(SUPERBLOCK + offset)
        f.write(struct.pack(fmt, value))


@dataclass(frozen=True)
class Fingerprint:
    """What "never modified" means for the user's file: its bytes, mtime and mode."""

    sha256: str
    mtime_ns: int
    mode: int

    @classmethod
    def of(cls, path: Path) -> Fingerprint:
        st = os.stat(path)
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        return cls(digest, st.st_mtime_ns, st.st_mode)
