"""Host facts every plugin needs: what kind of KVM this is, TSC frequency, size."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from banger_hookspecs import HostFacts
from banger_hookspecs.types import KvmKind

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def probe_kvm(
    dev: Path = Path("/dev/kvm"), sys_module: Path = Path("/sys/module"), cpuinfo: str | None = None
) -> tuple[KvmKind, str]:
    """``(kind, detail)``: see :class:`banger_hookspecs.HostFacts`."""
    if not dev.exists():
        return "absent", f"{dev} does not exist: no KVM (enable virtualization in firmware, load kvm_intel/kvm_amd)"
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        return "unusable", f"{dev} exists but you may not open it: add yourself to its group (usually kvm)"
    except OSError as exc:
        return "unusable", f"{dev} cannot be opened: {exc.strerror}"
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != KVM_API_VERSION:
            return "unusable", f"{dev} speaks an unexpected KVM API version"
        vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm_fd)
    except OSError as exc:
        return "unusable", f"{dev} refuses to create a VM: {exc.strerror}"
    finally:
        os.close(fd)
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = _cpu_flags(cpuinfo)
    if (sys_module / "kvm_pvm").exists():
        return "software", (
            "/dev/kvm is PVM, a software hypervisor: stock guest kernels cannot boot under it "
            "(Firecracker cannot run banger's VMs here; QEMU falls back to TCG emulation, ~10-50x slower)"
        )
    if not flags & {"vmx", "svm"}:
        return "software", (
            "/dev/kvm works but the CPU shows no vmx/svm flag: not hardware KVM, "
            "stock guest kernels may not boot under it (QEMU will use TCG emulation)"
        )
    return "hardware", "hardware KVM works (vmx/svm present, /dev/kvm creates VMs)"


def tsc_khz(cpuinfo: str | None = None) -> int | None:
    """Host TSC frequency from the kernel's boot message, else /proc/cpuinfo's cpu MHz."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz").read_text().strip()
        return int(text)
    except (OSError, ValueError):
        pass
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)
    return int(float(match.group(1)) * 1000) if match else None


def _memory_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def gather() -> HostFacts:
    kind, detail = probe_kvm()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return HostFacts(
        kvm=kind,
        kvm_detail=detail,
        tsc_khz=tsc_khz(cpuinfo),
        cpus=os.cpu_count() or 1,
        memory_mib=_memory_mib(),
    )
