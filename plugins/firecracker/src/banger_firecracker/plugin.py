"""Entry point of banger-firecracker: the ``firecracker`` VMM backend, config keys, doctor rows."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

from banger_hookspecs import CheckResult, ConfigOption, DoctorCheck, PluginContext, hookimpl

#: Oldest Firecracker with the API banger uses; newest minor series tested.
MIN_VERSION = (1, 5)
TESTED_SERIES = (1, 12)


def find_binary(ctx: PluginContext, key: str, name: str) -> str | None:
    configured = ctx.config.get(key)
    return str(configured) if configured else shutil.which(name)


def binary_version(binary: str) -> tuple[int, int, int] | None:
    """``(1, 12, 1)`` from ``firecracker --version`` (``Firecracker v1.12.1``)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption("firecracker_bin", "path", help="firecracker binary (default: from PATH)"),
        ConfigOption("jailer_bin", "path", help="jailer binary (default: from PATH)"),
        ConfigOption("use_jailer", "bool", False, help="run each Firecracker in a jailer chroot"),
        ConfigOption("jailer_uid", "int", help="uid the jailed Firecracker drops to (default: the daemon's)"),
        ConfigOption("jailer_gid", "int", help="gid the jailed Firecracker drops to (default: the daemon's)"),
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    binary = find_binary(ctx, "firecracker_bin", "firecracker")
    if not binary:
        yield CheckResult(
            "firecracker",
            "info",
            "firecracker not found: VMs will use QEMU",
            hint="install Firecracker's official release: https://github.com/firecracker-microvm/firecracker/releases",
        )
        return
    version = binary_version(binary)
    if version is None:
        yield CheckResult("firecracker", "warn", f"{binary} does not report a version", hint="reinstall Firecracker")
        return
    shown = "v" + ".".join(map(str, version))
    if version[:2] < MIN_VERSION:
        yield CheckResult(
            "firecracker",
            "warn",
            f"Firecracker {shown} is older than v{MIN_VERSION[0]}.{MIN_VERSION[1]}",
            hint="install a newer release",
        )
    elif version[:2] != TESTED_SERIES:
        yield CheckResult(
            "firecracker",
            "warn",
            f"Firecracker {shown} is outside the tested v{TESTED_SERIES[0]}.{TESTED_SERIES[1]}.x series",
            hint="it will probably work; report problems with the version",
        )
    else:
        yield CheckResult("firecracker", "ok", f"Firecracker {shown} at {binary}")
    if ctx.host.kvm != "hardware":
        yield CheckResult(
            "firecracker-kvm", "info", "Firecracker needs hardware KVM, which this host lacks: auto picks QEMU"
        )
    if ctx.config.get("use_jailer"):
        jailer = find_binary(ctx, "jailer_bin", "jailer")
        yield CheckResult(
            "jailer",
            "ok" if jailer else "fail",
            f"jailer at {jailer}" if jailer else "use_jailer is set but jailer is not found",
            hint=None if jailer else "install jailer from the same Firecracker release, or set use_jailer = false",
        )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="firecracker", run=_check)]
