"""Where banger keeps things, following the XDG base directory spec.

The rules are in :mod:`banger_core.common.locate` (plain strings, for the
CLI's fastest path); this module gives the same answers as paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from banger_core.common import locate
from banger_core.common.errors import BangerError


def home(env: Mapping[str, str]) -> Path:
    return Path(locate.home(env))


def config_file(env: Mapping[str, str] = os.environ) -> Path:
    """``$BANGER_CONFIG``, else ``$XDG_CONFIG_HOME/banger/config.toml``."""
    return Path(locate.config_file(env))


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    """banger's own config directory (generated ssh_config lives here)."""
    return Path(locate.xdg(env, "XDG_CONFIG_HOME", ".config")) / "banger"


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(locate.default_state_dir(env))


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(locate.xdg(env, "XDG_CACHE_HOME", ".cache")) / "banger"


def default_runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_RUNTIME_DIR/banger``; ``/run/banger`` for root; else a per-uid dir in /tmp."""
    return Path(locate.default_runtime_dir(env))


def expand_path(value: str, env: Mapping[str, str] = os.environ) -> Path:
    """:func:`banger_core.common.locate.expand` as a path (``ValueError`` for ``~user`` and relative paths).

    >>> expand_path("~/vms", {"HOME": "/home/ada"}), expand_path("/srv/b", {"HOME": "/home/ada"})
    (PosixPath('/home/ada/vms'), PosixPath('/srv/b'))
    """
    return Path(locate.expand(value, env))


def runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The runtime dir the daemon uses: config.toml's ``runtime_dir`` if set, else the default."""
    return Path(locate.runtime_dir(env))


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The state dir the daemon uses: config.toml's ``state_dir`` if set, else the default."""
    return Path(locate.state_dir(env))


#: Written by ``banger system install``; its presence switches the CLI to the installed service.
INSTALL_TOML = locate.INSTALL_TOML
#: Where the installed bangerd.service listens (systemd's RuntimeDirectory=banger).
SERVICE_SOCKET = locate.SERVICE_SOCKET


def install_toml(env: Mapping[str, str] = os.environ) -> Path:
    """``$BANGER_INSTALL_TOML`` (tests, staged roots), else ``/etc/banger/install.toml``."""
    return Path(locate.install_toml(env))


def installed_socket(env: Mapping[str, str] = os.environ) -> Path | None:
    """:func:`banger_core.common.locate.installed_socket` as a path."""
    socket = locate.installed_socket(env)
    return Path(socket) if socket is not None else None


def socket_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where the daemon listens: the installed service's socket, else ``<runtime_dir>/bangerd.sock``."""
    return Path(locate.socket_file(env))


def ensure_private_dir(path: Path, key: str) -> Path:
    """Create ``path`` (mode 0700) if missing; refuse an existing one that is not private and ours.

    An existing directory's mode is never changed: a ``runtime_dir`` pointing
    at a shared directory (``/tmp``) or at ``~`` must not silently lock others
    (or the user's own home) out. ``key`` names the config key to change.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BangerError(
            f"cannot create {path} ({exc.strerror}): set {key} in config.toml to a directory you can create"
        ) from None
    me = os.geteuid()
    st = path.stat()
    # A symlink owned by someone else can be re-pointed by them at any time.
    link_owner = path.lstat().st_uid
    if st.st_uid != me or link_owner != me:
        problem = f"owned by uid {st.st_uid if st.st_uid != me else link_owner}, not by you"
    elif st.st_mode & 0o077:
        problem = f"mode {st.st_mode & 0o7777:04o}, open to other users"
    else:
        return path
    raise BangerError(
        f"{path} is not a private directory ({problem}) and banger will not change an existing directory's "
        f"permissions: set {key} in config.toml to a path that does not exist yet (banger creates it with mode 0700)"
    )
