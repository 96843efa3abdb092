"""Where banger keeps things, following the XDG base directory spec."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


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


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make sure it is 0700 and ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to you: remove it or fix its owner")
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path


def runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The runtime dir the daemon uses: config.toml's ``runtime_dir`` if set, else the default.

    Read straight from the TOML file (no plugin loading, no full validation):
    every CLI call that talks to the daemon needs this, and it must stay cheap.
    A broken config file is reported by the daemon, which validates everything.
    """
    import tomllib

    try:
        with config_file(env).open("rb") as fh:
            configured = tomllib.load(fh).get("runtime_dir")
    except (OSError, tomllib.TOMLDecodeError):
        configured = None
    if isinstance(configured, str) and configured:
        expanded = str(home(env)) + configured[1:] if configured.startswith("~/") else configured
        if os.path.isabs(expanded):
            return Path(expanded)
    return default_runtime_dir(env)


def socket_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where the daemon listens: ``<runtime_dir>/bangerd.sock``."""
    return runtime_dir(env) / "bangerd.sock"
