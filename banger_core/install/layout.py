"""Where an install puts things: target paths (what the files say) and staged paths (where they are written)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path, PurePosixPath

from banger_core.common.errors import BangerError
from banger_core.common.paths import INSTALL_TOML, SERVICE_SOCKET

DEFAULT_PREFIX = "/opt/banger"
UNIT_DIR = "/etc/systemd/system"
DAEMON_UNIT = "bangerd.service"
ROOT_UNIT = "bangerd-root.service"
STATE_DIR = "/var/lib/banger"
CACHE_DIR = "/var/cache/banger"
RUNTIME_DIR = str(PurePosixPath(SERVICE_SOCKET).parent)
ROOT_RUNTIME_DIR = "/run/banger-root"
ROOT_STATE_DIR = "/var/lib/banger-root"
ROOT_SOCKET = f"{ROOT_RUNTIME_DIR}/bangerd-root.sock"
#: Prefixes whose removal would hurt: an uninstall only ever deletes PREFIX/versions and PREFIX/current,
#: but an install there would mix banger's files into the system's own.
FORBIDDEN_PREFIXES = {"/", "/usr", "/usr/local", "/etc", "/var", "/opt", "/home", "/root", "/tmp", "/run", "/srv"}


class Owner:
    """The unprivileged user bangerd runs as (``--owner``)."""

    def __init__(self, name: str, uid: int, gid: int, group: str, home: str) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.group = group
        self.home = home


def resolve_owner(name: str) -> Owner:
    """The login ``name``, refused when it does not exist or is root (one line, with the fix)."""
    import grp

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise BangerError(
            f"--owner {name}: no such user on this host: pass the login of the person who runs banger "
            "(create it first with useradd if needed)"
        ) from None
    if entry.pw_uid == 0:
        raise BangerError(
            f"--owner {name}: bangerd must not run as root (uid 0): pass the unprivileged login of the person "
            "who runs banger; only bangerd-root keeps root's capabilities"
        )
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = str(entry.pw_gid)
    return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid, group, entry.pw_dir)


def validate_prefix(value: str) -> str:
    """``--prefix``: an absolute, normalised directory of banger's own."""
    if not value.startswith("/") or os.path.normpath(value) != value.rstrip("/") or "//" in value:
        raise BangerError(f"--prefix {value!r} must be an absolute path without '..' or '//', e.g. {DEFAULT_PREFIX}")
    prefix = value.rstrip("/") or "/"
    if prefix in FORBIDDEN_PREFIXES:
        raise BangerError(f"--prefix {prefix} is a system directory: give banger its own, e.g. {DEFAULT_PREFIX}")
    if any(c in prefix for c in "\n\r\t \"'\\%$"):
        raise BangerError(f"--prefix {prefix!r} holds a space, quote, '%' or '$': systemd units cannot name it safely")
    return prefix


class Layout:
    """Target paths of an install, and where each is written: under ``root`` (``/`` for a live install)."""

    def __init__(self, root: Path, prefix: str) -> None:
        self.root = root
        self.prefix = prefix
        self.current = f"{prefix}/current"
        self.versions = f"{prefix}/versions"
        self.daemon_unit = f"{UNIT_DIR}/{DAEMON_UNIT}"
        self.root_unit = f"{UNIT_DIR}/{ROOT_UNIT}"
        self.install_toml = INSTALL_TOML

    @property
    def live(self) -> bool:
        return self.root == Path("/")

    def staged(self, target: str) -> Path:
        """Where the target path ``target`` is written: itself on a live install, under ``root`` otherwise."""
        return self.root / target.lstrip("/")

    def venv(self, version_name: str) -> str:
        return f"{self.versions}/{version_name}"
