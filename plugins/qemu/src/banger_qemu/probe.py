"""Finding the QEMU binary and its version (cheap: used by doctor and ``auto`` selection)."""

from __future__ import annotations

import re
import shutil
import subprocess

from banger_hookspecs import PluginContext

DEFAULT_BINARY = "qemu-system-x86_64"


def find_binary(ctx: PluginContext) -> str | None:
    """Config ``qemu_bin`` if set, else ``qemu-system-x86_64`` from PATH, else None."""
    configured = ctx.config.get("qemu_bin")
    if configured:
        return str(configured)
    return shutil.which(DEFAULT_BINARY)


def qemu_version(binary: str) -> str | None:
    """``"7.2.19"`` from ``qemu-system-x86_64 --version``, or None if it does not run."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", out)
    return match.group(1) if match else None
