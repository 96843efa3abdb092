"""Where banger keeps things, following the XDG base directory spec."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from banger_core.common.errors import BangerError


def home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var, "")
    # The spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return home(env) / fallback


def config_file(env: Mapping[str, str] = os.environ) -> Path:
    """``$BANGER_CONFIG``, else ``$XDG_CONFIG_HOME/banger/config.toml``."""
    explicit = env.get("BANGER_CONFIG")
    if explicit:
        return Path(explicit)
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "banger" / "config.toml"


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    """banger's own config directory (generated ssh_config lives here)."""
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "banger"


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    return _xdg(env, "XDG_DATA_HOME", ".local/share") / "banger"


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    return _xdg(env, "XDG_CACHE_HOME", ".cache") / "banger"


def default_runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_RUNTIME_DIR/banger``; ``/run/banger`` for root; else a per-uid dir in /tmp."""
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "banger"
    if os.geteuid() == 0:
        return Path("/run/banger")
    return Path(f"/tmp/banger-{os.geteuid()}")


def expand_path(value: str, env: Mapping[str, str] = os.environ) -> Path:
    """The one rule for a path in config.toml, shared by the CLI and the daemon.

    ``~`` and ``~/...`` mean the home directory (``$HOME``); anything else must
    be absolute. ``~user`` and relative paths raise ``ValueError``: they would
    mean different things to processes started from different places.

    >>> expand_path("~/vms", {"HOME": "/home/ada"}), expand_path("/srv/b", {"HOME": "/home/ada"})
    (PosixPath('/home/ada/vms'), PosixPath('/srv/b'))
    """
    if value == "~" or value.startswith("~/"):
        # lstrip: "~//x" must stay under home, not become the absolute "/x".
        return home(env) / value[2:].lstrip("/")
    if not os.path.isabs(value):
        raise ValueError(f"must be an absolute path (or start with ~/), got {value!r}")
    return Path(value)


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


def _configured_path(env: Mapping[str, str], key: str) -> Path | None:
    """``key`` from config.toml, read straight from the TOML file (no plugin loading, no full validation).

    Every CLI call that talks to the daemon needs the runtime dir, and it must
    stay cheap. A broken value gives None here (the default is used) and is
    reported by the daemon, which validates everything.
    """
    import tomllib

    try:
        with config_file(env).open("rb") as fh:
            configured = tomllib.load(fh).get(key)
    except (OSError, ValueError):  # unreadable, not UTF-8, or not TOML
        return None
    if not isinstance(configured, str) or not configured:
        return None
    try:
        return expand_path(configured, env)
    except ValueError:
        return None


def runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The runtime dir the daemon uses: config.toml's ``runtime_dir`` if set, else the default."""
    return _configured_path(env, "runtime_dir") or default_runtime_dir(env)


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The state dir the daemon uses: config.toml's ``state_dir`` if set, else the default."""
    return _configured_path(env, "state_dir") or default_state_dir(env)


#: Written by ``banger system install``; its presence switches the CLI to the installed service.
INSTALL_TOML = "/etc/banger/install.toml"
#: Where the installed bangerd.service listens (systemd's RuntimeDirectory=banger).
SERVICE_SOCKET = "/run/banger/bangerd.sock"


def install_toml(env: Mapping[str, str] = os.environ) -> Path:
    """``$BANGER_INSTALL_TOML`` (tests, staged roots), else ``/etc/banger/install.toml``."""
    return Path(env.get("BANGER_INSTALL_TOML") or INSTALL_TOML)


def installed_socket(env: Mapping[str, str] = os.environ) -> Path | None:
    """The installed service's socket when banger is installed as a service, else None.

    Every CLI call asks, so the common case (not installed) costs one failed
    ``stat``: the TOML is parsed only when the file exists. An install.toml
    that cannot be read or names no socket still means "installed": the CLI
    then uses the service's default socket rather than starting a daemon of its own.
    """
    path = install_toml(env)
    try:
        os.stat(path)
    except OSError:
        return None
    import tomllib

    try:
        with open(path, "rb") as fh:
            socket = tomllib.load(fh).get("paths", {}).get("socket")
    except (OSError, ValueError, AttributeError):
        socket = None
    return Path(socket) if isinstance(socket, str) and os.path.isabs(socket) else Path(SERVICE_SOCKET)


def socket_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where the daemon listens: the installed service's socket, else ``<runtime_dir>/bangerd.sock``."""
    return installed_socket(env) or runtime_dir(env) / "bangerd.sock"
