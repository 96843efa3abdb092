"""``file_sync``: files from the owner's home copied onto a new VM's work disk.

Each ``[[file_sync]]`` entry in ``config.toml`` names a ``host`` file or
directory under the owner's home, a ``guest`` destination under ``~/`` (the
work disk is mounted at ``/root``), and optionally a ``mode``::

    [[file_sync]]
    host = "~/.gitconfig"
    guest = "~/.gitconfig"
    mode = "0644"

:func:`validate_entries` checks every entry before anything is created, so a
bad entry never leaves a half-made VM; :func:`stage` then copies the entries
into the work disk's staging directory (a file lands at ``staging/<guest path
relative to ~>``).

Rules: guest paths stay under ``~/`` or ``/root/`` after normalization; host
paths resolve inside the home (a symlink given as ``host`` is followed only
when its target stays inside); symlinks met while copying a directory are
skipped with a warning; files get mode 0600 unless ``mode`` says otherwise,
directories 0700.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from banger_core.common.errors import FileSyncError

DEFAULT_FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
_MODE_RE = re.compile(r"^(?:0o|0)?([0-7]{3})$")
_GUEST_PREFIXES = ("~/", "/root/")
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class SyncEntry:
    """One validated ``file_sync`` entry.

    Attributes:
        index: the entry's position in ``file_sync``, counting from 1.
        host: ``host`` as written in the config.
        guest: ``guest`` as written in the config.
        source: the real (symlink-free) path of the host file or directory.
        dest: the destination relative to the work disk root (``/root`` in the guest).
        mode: the explicit file mode, or None for the 0600 default.
        is_dir: ``source`` is a directory.
    """

    index: int
    host: str
    guest: str
    source: Path
    dest: PurePosixPath
    mode: int | None
    is_dir: bool

    @property
    def label(self) -> str:
        """How errors and warnings name this entry: ``file_sync entry 2 (host "~/x")``."""
        return _label(self.index, self.host)

    @property
    def file_mode(self) -> int:
        """The mode staged files get."""
        return DEFAULT_FILE_MODE if self.mode is None else self.mode


def _label(index: int, host: object) -> str:
    return f'file_sync entry {index} (host "{host}")' if isinstance(host, str) else f"file_sync entry {index}"


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _parse_mode(value: object, label: str) -> int | None:
    if value is None:
        return None
    match = _MODE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise FileSyncError(f'{label}: mode must be an octal string of permission bits like "0644", got {value!r}')
    return int(match.group(1), 8)


def _parse_guest(value: object, label: str) -> PurePosixPath:
    if not isinstance(value, str) or not value.startswith(_GUEST_PREFIXES):
        raise FileSyncError(f'{label}: guest path must start with "~/" or "/root/", got {value!r}')
    if "\0" in value:
        raise FileSyncError(f"{label}: guest path {value!r} contains a NUL byte")
    rest = value.removeprefix("~/") if value.startswith("~/") else value.removeprefix("/root/")
    normalized = posixpath.normpath(rest) if rest else "."
    if normalized == ".":
        raise FileSyncError(f"{label}: guest path {value!r} names the home directory itself; name a file under it")
    if normalized == ".." or normalized.startswith("../"):
        raise FileSyncError(f"{label}: guest path {value!r} leaves the home directory; keep it under ~/")
    return PurePosixPath(normalized)


def _parse_host(value: object, label: str, home: str, real_home: str) -> tuple[Path, bool]:
    if not isinstance(value, str) or not value:
        raise FileSyncError(f'{label}: host must be a path under your home, like "~/.gitconfig", got {value!r}')
    if "\0" in value:
        raise FileSyncError(f"{label}: host path contains a NUL byte")
    if value == "~" or value.startswith("~/"):
        written = home + value[1:]
    elif value.startswith("~"):
        raise FileSyncError(f"{label}: only your own home (~/...) can be synced, not {value.split('/', 1)[0]}")
    elif os.path.isabs(value):
        written = value
    else:
        raise FileSyncError(f'{label}: host path must be absolute or start with "~/", got {value!r}')
    lexical = os.path.normpath(written)
    if lexical in (home, real_home):
        raise FileSyncError(f"{label}: {value} is your whole home directory; name a file or directory under it")
    if not (_is_within(lexical, home) or _is_within(lexical, real_home)):
        raise FileSyncError(f"{label}: {value} is not under your home ({home}); only files under it can be synced")
    try:
        os.lstat(lexical)
    except (FileNotFoundError, NotADirectoryError):
        raise FileSyncError(f"{label}: {value} does not exist; create it or remove the entry") from None
    real = os.path.realpath(lexical)
    if not _is_within(real, real_home) or real == real_home:
        raise FileSyncError(
            f"{label}: {value} is a symlink to {real}, outside your home; symlinks are followed only inside it"
        )
    try:
        st = os.stat(real)
    except OSError as exc:
        raise FileSyncError(f"{label}: {value} cannot be read: {exc.strerror}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise FileSyncError(f"{label}: {value} is neither a regular file nor a directory")
    if not os.access(real, os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)):
        raise FileSyncError(f"{label}: {value} is not readable by you; fix its permissions or remove the entry")
    return Path(real), stat.S_ISDIR(st.st_mode)


def validate_entries(entries: Sequence[object], home: Path) -> list[SyncEntry]:
    """Check every ``file_sync`` entry; raise on the first bad one.

    Args:
        entries: the ``file_sync`` tables from the config (``host``, ``guest``, optional ``mode``).
        home: the owner's home directory.

    Returns:
        The validated entries, in order.

    Raises:
        FileSyncError: one line naming the entry (``file_sync entry 2 (host "~/x"): ...``) and the fix.

    Example:
        >>> validate_entries([{"host": "~/.gitconfig", "guest": "~/.gitconfig"}], Path.home())  # doctest: +SKIP
        [SyncEntry(index=1, host='~/.gitconfig', ...)]
    """
    lexical_home = os.path.normpath(os.path.abspath(home))
    real_home = os.path.realpath(home)
    validated: list[SyncEntry] = []
    for index, raw in enumerate(entries, start=1):
        if not isinstance(raw, Mapping):
            raise FileSyncError(f"file_sync entry {index} must be a table with host and guest keys")
        label = _label(index, raw.get("host"))
        unknown = sorted(set(raw) - {"host", "guest", "mode"})
        if unknown:
            raise FileSyncError(f"{label}: unknown key {unknown[0]!r} (known: guest, host, mode)")
        mode = _parse_mode(raw.get("mode"), label)
        dest = _parse_guest(raw.get("guest"), label)
        source, is_dir = _parse_host(raw.get("host"), label, lexical_home, real_home)
        for other in validated:
            if dest == other.dest:
                raise FileSyncError(f"{label}: guest path {raw['guest']} is also the target of entry {other.index}")
            if dest.is_relative_to(other.dest) or other.dest.is_relative_to(dest):
                raise FileSyncError(
                    f"{label}: guest path {raw['guest']} overlaps entry {other.index}'s {other.guest}; "
                    "sync the parent directory once or pick separate paths"
                )
        validated.append(SyncEntry(index, raw["host"], raw["guest"], source, dest, mode, is_dir))
    return validated


def stage(entries: Sequence[SyncEntry], staging_dir: Path, warn: Callable[[str], None]) -> list[str]:
    """Copy validated entries into ``staging_dir``, the future root of the work disk.

    Directories are created 0700, files get the entry's mode (0600 by
    default). Each file is written to a temporary name and linked into place,
    so a destination is never half-written and never silently replaced.
    Directories are read through file descriptors opened with ``O_NOFOLLOW``:
    a symlink swapped in while copying is not followed either.

    Args:
        entries: from :func:`validate_entries`.
        staging_dir: the work disk's staging directory (``/root`` in the guest).
        warn: receives one line per skipped symlink, special or unreadable file.

    Returns:
        The staged files, relative to ``staging_dir``, in copy order.

    Raises:
        FileSyncError: a destination is already staged (e.g. a file banger stages itself).
    """
    staged: list[str] = []
    for entry in entries:
        stager = _Stager(staging_dir, entry, warn, staged)
        for depth in range(1, len(entry.dest.parts)):
            stager.make_dir(PurePosixPath(*entry.dest.parts[:depth]))
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if entry.is_dir else 0)
        src_fd = os.open(entry.source, flags)
        try:
            if entry.is_dir:
                stager.make_dir(entry.dest)
                stager.copy_tree(src_fd, entry.dest)
            else:
                stager.copy_file(src_fd, entry.dest)
        finally:
            os.close(src_fd)
    return staged


@dataclass
class _Stager:
    """Copies one entry into the staging directory."""

    staging_dir: Path
    entry: SyncEntry
    warn: Callable[[str], None]
    staged: list[str]

    def _already_staged(self, rel: PurePosixPath) -> FileSyncError:
        return FileSyncError(f"{self.entry.label}: ~/{rel} is already staged by banger; pick another guest path")

    def make_dir(self, rel: PurePosixPath) -> None:
        path = self.staging_dir / rel
        try:
            path.mkdir(mode=DIRECTORY_MODE)
            path.chmod(DIRECTORY_MODE)  # mkdir's mode passes through the umask
        except FileExistsError:
            if path.is_symlink() or not path.is_dir():
                raise self._already_staged(rel) from None

    def copy_file(self, src_fd: int, rel: PurePosixPath) -> None:
        target = self.staging_dir / rel
        st = os.fstat(src_fd)
        tmp_fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".banger-file-sync-")
        try:
            with os.fdopen(tmp_fd, "wb") as out:
                while chunk := os.read(src_fd, _COPY_CHUNK):
                    out.write(chunk)
                os.fchmod(out.fileno(), self.entry.file_mode)
            os.utime(tmp_name, ns=(st.st_atime_ns, st.st_mtime_ns))
            # link() refuses to replace an existing name, unlike rename().
            os.link(tmp_name, target)
        except FileExistsError:
            raise self._already_staged(rel) from None
        finally:
            os.unlink(tmp_name)
        self.staged.append(str(rel))

    def copy_tree(self, dir_fd: int, rel: PurePosixPath) -> None:
        """Copy the directory open as ``dir_fd`` to ``rel``, never following a symlink."""
        with os.scandir(dir_fd) as it:
            names = sorted(child.name for child in it)
        for name in names:
            shown = f"{self.entry.host.rstrip('/')}/{(rel / name).relative_to(self.entry.dest)}"
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    self.warn(f"{self.entry.label}: skipped symlink {shown} (not followed inside a synced directory)")
                    continue
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    self.warn(f"{self.entry.label}: skipped {shown} (not a regular file or directory)")
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if is_dir else 0)
                child_fd = os.open(name, flags, dir_fd=dir_fd)
            except PermissionError:
                self.warn(f"{self.entry.label}: skipped {shown} (not readable)")
                continue
            try:
                if is_dir:
                    self.make_dir(rel / name)
                    self.copy_tree(child_fd, rel / name)
                else:
                    self.copy_file(child_fd, rel / name)
            finally:
                os.close(child_fd)
