"""What one shipped file is, and the path rules every file must pass."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import NamedTuple

#: Names the syncer keeps for itself at the top of the guest directory.
MANIFEST_NAME = ".banger-sync-manifest"
DELETE_LIST_NAME = ".banger-sync-delete"
RESERVED_NAMES = frozenset({MANIFEST_NAME, DELETE_LIST_NAME})

FILE = "f"
SYMLINK = "l"


class Entry(NamedTuple):
    """One file or symlink to ship (a named tuple: tens of thousands are made per sync).

    Attributes:
        path: POSIX path relative to the workspace root.
        kind: ``"f"`` (regular file) or ``"l"`` (symlink).
        mode: permission bits written into the archive.
        size: content size in bytes (0 for a symlink).
        mtime: whole seconds written into the archive; tar sets it in the guest.
        stamp: what shows the host content is unchanged since the last sync:
            the file's mtime in nanoseconds (working tree) or its blob id (ref).
        target: the symlink's target.
        repo: for content taken from git objects, the repository holding blob ``stamp``.
    """

    path: str
    kind: str
    mode: int
    size: int
    mtime: int
    stamp: str
    target: str = ""
    repo: Path | None = None

    def record(self) -> tuple[str, int, int, int, str, str]:
        """The fields the manifest keeps for this path (everything but the path and repo)."""
        return (self.kind, self.mode, self.size, self.mtime, self.stamp, self.target)


def is_safe_relpath(path: str) -> bool:
    """True for a normalized relative path that cannot leave the directory it is relative to.

    Used on every path that comes back from the guest: no absolute paths, no
    empty, ``.`` or ``..`` components, no NUL.
    """
    if not path or path.startswith("/") or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def symlink_stays_inside(path: str, target: str) -> bool:
    """True if symlink ``path`` -> ``target`` points inside the tree, judged by its text.

    Absolute targets never count as inside: the host's absolute paths mean
    nothing in the guest.
    """
    if not target or target.startswith("/") or "\0" in target:
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved != ".." and not resolved.startswith("../")


def summarize(what: str, items: list[str], limit: int = 5) -> str:
    """``"<what>: a, b, c and 4 more"`` for warnings about many paths."""
    shown = ", ".join(items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{what}: {shown}{more}"
