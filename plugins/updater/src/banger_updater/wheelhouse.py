"""A release's wheelhouse tar, unpacked as hostile input: top-level ``*.whl`` regular files only.

The tar's digest was checked against the signed manifest before this runs, so a bad
member means a bad release, not a tampered download; it is still read as if hostile:
no links, directories, devices or paths, no duplicate names, bounded counts and sizes,
every file created anew (``O_EXCL``, never through a symlink) in a fresh directory.
"""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

from banger_core.common.errors import BangerError

#: banger, its plugins and every dependency: a few dozen wheels.
MAX_WHEELS = 1000
MAX_WHEEL_BYTES = 512 * 1024**2
#: A wheel file name (PEP 427): one path component, ending in .whl.
_WHEEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,250}\.whl")
_CHUNK = 1 << 20

FIX = "the release is malformed: ask its publisher to fix it (nothing was installed)"


def unpack(tar_path: Path, into: Path, label: str) -> list[Path]:
    """Write the wheels of ``tar_path`` into the new directory ``into``; return them (``label`` names the tar)."""
    into.mkdir(mode=0o755)
    wheels: list[Path] = []
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                wheels.append(_extract(tar, member, into, label, len(wheels)))
    except (tarfile.TarError, EOFError) as exc:
        raise BangerError(f"{label}: not a readable tar ({exc}): {FIX}") from None
    if not any(w.name.startswith("banger-") for w in wheels):
        raise BangerError(f"{label}: holds no banger wheel (banger-*.whl): {FIX}")
    return wheels


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path, label: str, count: int) -> Path:
    shown = repr(member.name)[:80]
    if count >= MAX_WHEELS:
        raise BangerError(f"{label}: more than {MAX_WHEELS} members: {FIX}")
    if not member.isreg():
        raise BangerError(f"{label}: member {shown} is not a regular file (a link, directory or device): {FIX}")
    if _WHEEL.fullmatch(member.name) is None:
        raise BangerError(f"{label}: member {shown} is not a wheel file at the top level (NAME.whl): {FIX}")
    if member.size > MAX_WHEEL_BYTES:
        raise BangerError(f"{label}: member {shown} is {member.size} bytes, over {MAX_WHEEL_BYTES}: {FIX}")
    target = into / member.name
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise BangerError(f"{label}: member {shown} appears twice: {FIX}") from None
    source = tar.extractfile(member)
    assert source is not None  # a regular file always has content
    with os.fdopen(fd, "wb") as out, source:
        written = 0
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            out.write(chunk)
    if written != member.size:
        raise BangerError(f"{label}: member {shown} is cut short: {FIX}")
    return target
