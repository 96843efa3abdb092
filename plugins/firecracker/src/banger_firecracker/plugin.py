"""Entry point of banger-firecracker: the ``firecracker`` VMM backend, config keys, doctor rows."""

from __future__ import annotations

import os
from collections.abc import Iterable

from banger_firecracker.jail import DEFAULT_CHROOT_BASE
from banger_firecracker.probe import MIN_VERSION, TESTED_SERIES, binary_version, find_binary, show
from banger_hookspecs import CheckResult, ConfigOption, DoctorCheck, PluginContext, VmmBackend, VmmDriver, hookimpl


def _make_driver(ctx: PluginContext) -> VmmDriver:
    from banger_firecracker.driver import FirecrackerDriver  # httpx is imported only when a VM needs it

    return FirecrackerDriver(ctx)


@hookimpl
def banger_vmm_backends() -> Iterable[VmmBackend]:
    return [
        VmmBackend(
            name="firecracker",
            description="Firecracker microVMs configured through the API socket (needs hardware KVM)",
            factory=_make_driver,
            nic_kinds=("tap",),  # no user-mode networking in Firecracker
        )
    ]


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption("firecracker_bin", "path", help="firecracker binary (default: from PATH)"),
        ConfigOption("jailer_bin", "path", help="jailer binary (default: from PATH)"),
        ConfigOption(
            "use_jailer",
            "bool",
            help="run each Firecracker in a jailer chroot (unset: whenever the jailer is installed and the daemon "
            "is root or bangerd-root runs; false: never)",
        ),
        ConfigOption(
            "jailer_chroot_base",
            "path",
            DEFAULT_CHROOT_BASE,
            help="where bangerd-root builds jails: a root-owned directory (same on both sides, install.toml too)",
        ),
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
    shown = show(version)
    if version[:2] < MIN_VERSION:
        yield CheckResult(
            "firecracker",
            "warn",
            f"Firecracker {shown} is older than v{MIN_VERSION[0]}.{MIN_VERSION[1]}: banger will not use it",
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
    if ctx.config.get("use_jailer") is not False:
        yield from _jailer_rows(ctx, version)


def _jailer_rows(ctx: PluginContext, firecracker_version: tuple[int, int, int]) -> Iterable[CheckResult]:
    jailer = find_binary(ctx, "jailer_bin", "jailer")
    if not jailer and ctx.config.get("use_jailer") is None:
        return  # unset: no jailer, no row (Firecracker runs unjailed as it always did)
    if not jailer:
        yield CheckResult(
            "jailer",
            "fail",
            "use_jailer is set but jailer is not found",
            hint="install jailer from the same Firecracker release, or set use_jailer = false",
        )
        return
    jailer_version = binary_version(jailer)
    if jailer_version != firecracker_version:
        found = show(jailer_version) if jailer_version else "no version"
        yield CheckResult(
            "jailer",
            "warn",
            f"jailer at {jailer} reports {found}, Firecracker is {show(firecracker_version)}",
            hint="install jailer and firecracker from the same release",
        )
    elif os.geteuid() != 0:
        yield CheckResult(
            "jailer",
            "info",
            f"jailer {show(jailer_version)} at {jailer}: used through bangerd-root when it runs, else not",
            hint="the jailer needs root: `banger system install` runs bangerd-root; use_jailer = false opts out",
        )
    else:
        yield CheckResult("jailer", "ok", f"jailer {show(jailer_version)} at {jailer}")


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="firecracker", run=_check)]
