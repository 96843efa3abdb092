"""Entry point of banger-qemu: the ``qemu`` VMM backend, its config keys and doctor rows."""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import CheckResult, ConfigOption, DoctorCheck, PluginContext, VmmBackend, VmmDriver, hookimpl
from banger_qemu.probe import find_binary, qemu_version, sandbox_option


def _make_driver(ctx: PluginContext) -> VmmDriver:
    from banger_qemu.driver import QemuDriver  # imported only when a VM is launched or probed

    return QemuDriver(ctx)


@hookimpl
def banger_vmm_backends() -> Iterable[VmmBackend]:
    return [
        VmmBackend(
            name="qemu",
            description="QEMU microvm (q35 optional): hardware KVM when present, TCG emulation otherwise",
            factory=_make_driver,
        )
    ]


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption("qemu_bin", "path", help="qemu-system-x86_64 to use (default: from PATH)"),
        ConfigOption("qemu_machine", "str", "microvm", choices=("microvm", "q35"), help="QEMU machine type"),
        ConfigOption("qemu_accel", "str", "auto", choices=("auto", "kvm", "tcg"), help="QEMU accelerator"),
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    binary = find_binary(ctx)
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
    if sandbox_option(binary) is None:
        yield CheckResult(
            "qemu-sandbox",
            "warn",
            f"{binary} has no seccomp support (-sandbox): QEMU runs without a system call filter",
            hint="use a QEMU built with seccomp (Debian's qemu-system-x86 is)",
        )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="qemu", run=_check)]
