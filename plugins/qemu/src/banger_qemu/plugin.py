"""Entry point of banger-qemu: the ``qemu`` VMM backend, its config keys and doctor rows."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

from banger_hookspecs import CheckResult, ConfigOption, DoctorCheck, PluginContext, hookimpl

DEFAULT_BINARY = "qemu-system-x86_64"


def qemu_binary(ctx: PluginContext) -> str | None:
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


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption("qemu_bin", "path", help="qemu-system-x86_64 to use (default: from PATH)"),
        ConfigOption("qemu_machine", "str", "microvm", choices=("microvm", "q35"), help="QEMU machine type"),
        ConfigOption("qemu_accel", "str", "auto", choices=("auto", "kvm", "tcg"), help="QEMU accelerator"),
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    binary = qemu_binary(ctx)
    version = qemu_version(binary) if binary else None
    if not binary or not version:
        yield CheckResult(
            "qemu",
            "warn",
            "qemu-system-x86_64 not found" if not binary else f"{binary} does not run",
            hint="install it: apt-get install qemu-system-x86",
        )
        return
    accel = "KVM" if ctx.host.kvm == "hardware" else "TCG software emulation (slow: ~10-50x)"
    yield CheckResult("qemu", "ok", f"QEMU {version} at {binary}; guests will run with {accel}")


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="qemu", run=_check)]
