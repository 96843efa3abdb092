"""Entry point of banger-debian: Debian's cloud kernel plus banger's initramfs."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable
from pathlib import Path

from banger_hookspecs import (
    CheckResult,
    DoctorCheck,
    KernelProvider,
    KernelProviderDriver,
    PluginContext,
    hookimpl,
)

BUSYBOX = Path("/bin/busybox")
PT_INTERP = 3


def is_static_elf(path: Path) -> bool:
    """True if ``path`` is a 64-bit little-endian ELF without a program interpreter."""
    try:
        with path.open("rb") as fh:
            header = fh.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return False
            (phoff,) = struct.unpack_from("<Q", header, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != PT_INTERP for i in range(phnum))


def _make_provider(ctx: PluginContext) -> KernelProviderDriver:
    from banger_debian.kernel import DebianKernelProvider  # lz4 and friends load only when used

    return DebianKernelProvider(ctx)


@hookimpl
def banger_kernel_providers() -> Iterable[KernelProvider]:
    return [
        KernelProvider(
            name="debian",
            description="Debian's cloud kernel (apt) as ELF vmlinux plus banger's initramfs",
            factory=_make_provider,
            priority=60,  # after the catalog: a download of a ready kernel is faster
        )
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    apt = shutil.which("apt-get")
    yield CheckResult(
        "apt",
        "ok" if apt else "warn",
        f"apt-get at {apt}" if apt else "apt-get not found: the Debian kernel cannot be downloaded",
        hint=None if apt else "use a kernel from the catalog instead",
    )
    static = is_static_elf(BUSYBOX)
    yield CheckResult(
        "busybox-static",
        "ok" if static else "warn",
        f"static busybox at {BUSYBOX}" if static else "no static busybox: banger's initramfs cannot be built",
        hint=None if static else "install it: apt-get install busybox-static",
    )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="debian-kernel", run=_check)]
