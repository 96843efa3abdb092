"""Finding the QEMU binary and its version (cheap: used by doctor and ``auto`` selection)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

from banger_hookspecs import PluginContext

DEFAULT_BINARY = "qemu-system-x86_64"
#: QEMU's seccomp filter at its strictest: no obsolete syscalls, no set*id, no fork/exec, no
#: scheduler/affinity changes. banger's QEMU needs none of them: passt and the console pump are
#: started by the daemon, and taps come opened by name (``script=no``), never through a helper.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def find_binary(ctx: PluginContext) -> str | None:
    """Config ``qemu_bin`` if set, else ``qemu-system-x86_64`` from PATH, else None."""
    configured = ctx.config.get("qemu_bin")
    if configured:
        return str(configured)
    return shutil.which(DEFAULT_BINARY)


def qemu_version(binary: str) -> str | None:
    """``"7.2.19"`` from ``qemu-system-x86_64 --version``, or None if it does not run.

    Probed once per binary file (path, inode, mtime), as :func:`sandbox_option`: a warm `vm run`
    asked three times (plan, create, template key), ~40 ms each under TCG hosts' load.
    """
    path = shutil.which(binary) or binary
    key = _file_key(path)
    return None if key is None else _probe_version(path, *key)


@functools.lru_cache(maxsize=8)
def _probe_version(binary: str, inode: int, mtime_ns: int) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", out)
    return match.group(1) if match else None


def sandbox_option(binary: str) -> str | None:
    """:data:`SANDBOX` when ``binary`` accepts it (built with seccomp), else None.

    Probed once per binary file (path, inode, mtime: an upgraded QEMU is probed again).
    """
    key = _file_key(binary)
    return None if key is None else _probe_sandbox(binary, *key)


def _file_key(path: str) -> tuple[int, int] | None:
    """(inode, mtime) of ``path``: what the probes are cached by (an upgraded QEMU is probed again); None if absent."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _probe_sandbox(binary: str, inode: int, mtime_ns: int) -> str | None:
    # `-version` exits before QEMU installs the filter: start a machine-less QEMU for real and quit it.
    probe = [binary, "-sandbox", SANDBOX, "-M", "none", "-nodefaults", "-no-user-config", "-display", "none"]
    try:
        done = subprocess.run([*probe, "-monitor", "stdio"], input="quit\n", capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return SANDBOX if done.returncode == 0 else None
