"""The sync manifest the syncer leaves in the guest, and reading the guest's answers.

The manifest (``.banger-sync-manifest`` in the guest directory) lists every
file the syncer shipped, with what it wrote: kind, mode, size, mtime and the
host-side stamp. An incremental sync reads it back together with a ``find``
listing of the planned paths. Both come from the guest and are treated as
hostile: they only ever decide which *planned* files to skip and which
previously shipped paths to delete in the guest; every path they name must be
a safe relative path, and nothing they say is used to open a file on the host.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from banger_git.entries import FILE, SYMLINK, Entry, is_safe_relpath

MAGIC = b"banger-sync-manifest 1"
FIELDS_PER_RECORD = 7
STAT_FIELDS = 6
_STAMP_RE = re.compile(r"^[0-9a-f]{0,64}$")
_INT_RE = re.compile(r"^[0-9]{1,20}$")

Record = tuple[str, int, int, int, str, str]


def encode_manifest(entries: Iterable[Entry]) -> bytes:
    """The manifest bytes for ``entries`` (NUL-separated fields, so any name fits)."""
    parts = [MAGIC]
    for entry in entries:
        parts += [
            os.fsencode(entry.path),
            entry.kind.encode("ascii"),
            f"{entry.mode:o}".encode("ascii"),
            str(entry.size).encode("ascii"),
            str(entry.mtime).encode("ascii"),
            entry.stamp.encode("ascii"),
            os.fsencode(entry.target),
        ]
    return b"\0".join(parts) + b"\0"


def _int(token: bytes) -> int:
    text = token.decode("ascii")
    if not _INT_RE.match(text):
        raise ValueError(text)
    return int(text)


def parse_manifest(data: bytes) -> dict[str, Record] | None:
    """The records of a manifest, or None if anything in it is malformed.

    A manifest that does not parse is ignored as a whole: the next sync then
    sends every file and deletes nothing, which is always safe.
    """
    tokens = data.split(b"\0")
    if len(tokens) < 2 or tokens[0] != MAGIC or tokens[-1] != b"":
        return None
    body = tokens[1:-1]
    if len(body) % FIELDS_PER_RECORD:
        return None
    records: dict[str, Record] = {}
    try:
        for i in range(0, len(body), FIELDS_PER_RECORD):
            raw_path, kind, mode, size, mtime, stamp, target = body[i : i + FIELDS_PER_RECORD]
            path = os.fsdecode(raw_path)
            stamp_text = stamp.decode("ascii")
            if not is_safe_relpath(path) or path in records or not _STAMP_RE.match(stamp_text):
                return None
            if kind not in (FILE.encode(), SYMLINK.encode()):
                return None
            mode_value = int(mode.decode("ascii"), 8)
            if not 0 <= mode_value <= 0o777:
                return None
            records[path] = (kind.decode(), mode_value, _int(size), _int(mtime), stamp_text, os.fsdecode(target))
    except (ValueError, UnicodeDecodeError):
        return None
    return records


@dataclass(frozen=True)
class GuestFile:
    """What ``find`` in the guest says about one planned path."""

    kind: str
    mode: int
    size: int
    mtime: int
    target: str


@dataclass(frozen=True)
class GuestState:
    """The guest directory as the guest describes it.

    Attributes:
        present: the guest directory exists.
        manifest: what the last sync shipped, or None (no manifest, or unreadable).
        manifest_unreadable: a manifest exists but did not parse.
        files: ``find`` results for planned paths, or None when the guest
            cannot report them (no GNU find).
    """

    present: bool
    manifest: dict[str, Record] | None
    manifest_unreadable: bool
    files: dict[str, GuestFile] | None


ABSENT = GuestState(present=False, manifest=None, manifest_unreadable=False, files=None)


def _parse_stats(data: bytes) -> dict[str, GuestFile] | None:
    tokens = data.split(b"\0")
    if tokens[-1] != b"" or (len(tokens) - 1) % STAT_FIELDS:
        return None
    files: dict[str, GuestFile] = {}
    for i in range(0, len(tokens) - 1, STAT_FIELDS):
        raw_path, kind, mode, size, mtime, target = tokens[i : i + STAT_FIELDS]
        path = os.fsdecode(raw_path).removeprefix("./")
        if not is_safe_relpath(path):
            continue
        try:
            files[path] = GuestFile(
                kind=kind.decode("ascii"),
                mode=int(mode.decode("ascii"), 8) & 0o777,
                size=_int(size),
                mtime=_int(mtime.split(b".", 1)[0]),
                target=os.fsdecode(target),
            )
        except (ValueError, UnicodeDecodeError):
            continue  # that one file is simply sent again
    return files


def parse_guest_state(output: bytes) -> GuestState:
    """Parse what the guest's state query printed (see ``guest.QUERY_SCRIPT``).

    Raises:
        ValueError: the output does not follow the query's format at all.
    """
    status, sep, rest = output.partition(b"\n")
    if status == b"absent" and sep:
        return ABSENT
    if status != b"present" or not sep:
        raise ValueError("unexpected answer from the guest's state query")
    length_line, sep, rest = rest.partition(b"\n")
    try:
        length = _int(length_line.strip()) if sep else -1
    except (ValueError, UnicodeDecodeError):
        length = -1
    if length < 0 or len(rest) < length:
        raise ValueError("unexpected answer from the guest's state query")
    manifest_bytes, rest = rest[:length], rest[length:]
    manifest = parse_manifest(manifest_bytes) if length else None
    mode, sep, stats = rest.partition(b"\n")
    if mode == b"stat" and sep:
        files = _parse_stats(stats)
    elif mode == b"nostat" and sep:
        files = None
    else:
        raise ValueError("unexpected answer from the guest's state query")
    return GuestState(
        present=True, manifest=manifest, manifest_unreadable=bool(length) and manifest is None, files=files
    )


def shipped_mtime(entry: Entry, state: GuestState) -> int:
    """The mtime the guest's copy of ``entry`` got when it was shipped (for an unchanged entry)."""
    assert state.manifest is not None
    return state.manifest[entry.path][3]


def is_unchanged(entry: Entry, state: GuestState) -> bool:
    """True when the guest already has exactly ``entry``: same host content as last time, untouched since.

    Needs both the manifest (what we shipped, from which host state) and the
    guest's own ``find`` answer (nobody changed it in the guest since). The
    archive mtime is left out of the host-side comparison: a ref's files carry
    their commit's time, and the same blob under another commit is unchanged.
    """
    if state.manifest is None or state.files is None:
        return False
    shipped = state.manifest.get(entry.path)
    found = state.files.get(entry.path)
    if shipped is None or found is None:
        return False
    kind, mode, size, mtime, stamp, target = shipped
    if (kind, mode, size, stamp, target) != (entry.kind, entry.mode, entry.size, entry.stamp, entry.target):
        return False
    if kind == SYMLINK:
        return found.kind == "l" and found.target == target
    return found.kind == "f" and (found.mode, found.size, found.mtime) == (mode, size, mtime)
