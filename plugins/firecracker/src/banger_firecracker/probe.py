"""Finding the Firecracker and jailer binaries and their versions (cheap: doctor and ``auto`` use it)."""

from __future__ import annotations

import re
import shutil
import subprocess

from banger_hookspecs import PluginContext

#: Oldest Firecracker with the API banger uses; newest minor series tested.
MIN_VERSION = (1, 5)
TESTED_SERIES = (1, 12)

Version = tuple[int, int, int]


def find_binary(ctx: PluginContext, key: str, name: str) -> str | None:
    """Config ``key`` if set, else ``name`` from PATH, else None."""
    configured = ctx.config.get(key)
    return str(configured) if configured else shutil.which(name)


def binary_version(binary: str) -> Version | None:
    """``(1, 12, 1)`` from ``firecracker --version`` (``Firecracker v1.12.1``), or None if it does not run."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def show(version: Version) -> str:
    """``v1.12.1``."""
    return "v" + ".".join(map(str, version))
