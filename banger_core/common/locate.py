"""Where banger's files are, as plain strings: the XDG rules, config.toml's path keys, the daemon's socket.

The rules live here, with nothing but :mod:`os` imported, because ``banger
vm list`` resolves the socket on every call and :mod:`pathlib` (with the
``urllib.parse`` and ``ipaddress`` it imports) costs about 0.4 interpreter
start-ups (docs/performance.md). :mod:`banger_core.common.paths` gives every
caller that is not on that path the same answers as :class:`~pathlib.Path`.
"""

from __future__ import annotations

import os

#: ``typing`` costs more to import than this module's work: mypy recognises the flag by its name.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Mapping


def join(*parts: str) -> str:
    """``os.path.join`` without the empty, ``.`` and repeated-``/`` parts a :class:`~pathlib.Path` drops too."""
    joined = os.path.join(*parts)
    kept = [part for part in joined.split("/") if part not in ("", ".")]
    return ("/" if joined.startswith("/") else "") + "/".join(kept)


def home(env: Mapping[str, str]) -> str:
    return join(env.get("HOME") or os.path.expanduser("~"))


def xdg(env: Mapping[str, str], var: str, fallback: str) -> str:
    """``$var`` when it is absolute (the spec says relative values must be ignored), else ``~/fallback``."""
    value = env.get(var, "")
    if value and os.path.isabs(value):
        return join(value)
    return join(home(env), fallback)


def config_file(env: Mapping[str, str] = os.environ) -> str:
    """``$BANGER_CONFIG``, else ``$XDG_CONFIG_HOME/banger/config.toml``."""
    explicit = env.get("BANGER_CONFIG")
    if explicit:
        return join(explicit)
    return join(xdg(env, "XDG_CONFIG_HOME", ".config"), "banger", "config.toml")


def default_state_dir(env: Mapping[str, str] = os.environ) -> str:
    return join(xdg(env, "XDG_DATA_HOME", ".local/share"), "banger")


def default_runtime_dir(env: Mapping[str, str] = os.environ) -> str:
    """``$XDG_RUNTIME_DIR/banger``; ``/run/banger`` for root; else a per-uid dir in /tmp."""
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return join(runtime, "banger")
    if os.geteuid() == 0:
        return "/run/banger"
    return f"/tmp/banger-{os.geteuid()}"


def expand(value: str, env: Mapping[str, str] = os.environ) -> str:
    """The one rule for a path in config.toml, shared by the CLI and the daemon.

    ``~`` and ``~/...`` mean the home directory (``$HOME``); anything else must
    be absolute. ``~user`` and relative paths raise ``ValueError``: they would
    mean different things to processes started from different places.

    >>> expand("~/vms", {"HOME": "/home/ada"}), expand("/srv//b/", {"HOME": "/home/ada"})
    ('/home/ada/vms', '/srv/b')
    """
    if value == "~" or value.startswith("~/"):
        # lstrip: "~//x" must stay under home, not become the absolute "/x".
        return join(home(env), value[2:].lstrip("/"))
    if not os.path.isabs(value):
        raise ValueError(f"must be an absolute path (or start with ~/), got {value!r}")
    return join(value)


def configured(env: Mapping[str, str], key: str) -> str | None:
    """``key`` from config.toml, read straight from the TOML file (no plugin loading, no full validation).

    Every CLI call that talks to the daemon needs the runtime dir, and it must
    stay cheap. A broken value gives None here (the default is used) and is
    reported by the daemon, which validates everything.
    """
    try:
        with open(config_file(env), "rb") as fh:
            text = fh.read()
    except OSError:  # none, or unreadable
        return None
    if key.encode() not in text and b"\\u" not in text and b"\\U" not in text:
        # Without the key's own letters or a \u escape, no spelling of TOML can set it. Most files don't
        # set it, and tomllib's import costs more than half an interpreter start-up on `banger vm list`.
        return None
    import tomllib

    try:
        value = tomllib.loads(text.decode()).get(key)
    except (UnicodeDecodeError, ValueError):  # not UTF-8, or not TOML
        return None
    if not isinstance(value, str) or not value:
        return None
    try:
        return expand(value, env)
    except ValueError:
        return None


def runtime_dir(env: Mapping[str, str] = os.environ) -> str:
    """The runtime dir the daemon uses: config.toml's ``runtime_dir`` if set, else the default."""
    return configured(env, "runtime_dir") or default_runtime_dir(env)


def state_dir(env: Mapping[str, str] = os.environ) -> str:
    """The state dir the daemon uses: config.toml's ``state_dir`` if set, else the default."""
    return configured(env, "state_dir") or default_state_dir(env)


#: Written by ``banger system install``; its presence switches the CLI to the installed service.
INSTALL_TOML = "/etc/banger/install.toml"
#: Where the installed bangerd.service listens (systemd's RuntimeDirectory=banger).
SERVICE_SOCKET = "/run/banger/bangerd.sock"


def install_toml(env: Mapping[str, str] = os.environ) -> str:
    """``$BANGER_INSTALL_TOML`` (tests, staged roots), else ``/etc/banger/install.toml``."""
    return env.get("BANGER_INSTALL_TOML") or INSTALL_TOML


def installed_socket(env: Mapping[str, str] = os.environ) -> str | None:
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
    return join(socket) if isinstance(socket, str) and os.path.isabs(socket) else SERVICE_SOCKET


def user_socket_file(env: Mapping[str, str] = os.environ) -> str:
    """Where a daemon of the user's own listens: ``<runtime_dir>/bangerd.sock``."""
    return join(runtime_dir(env), "bangerd.sock")


def socket_file(env: Mapping[str, str] = os.environ) -> str:
    """Where the daemon listens: the installed service's socket, else ``<runtime_dir>/bangerd.sock``."""
    return installed_socket(env) or user_socket_file(env)
