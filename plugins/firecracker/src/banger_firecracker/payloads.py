"""The API calls that configure one VM, built from a :class:`~banger_hookspecs.VmSpec`: pure, unit-tested."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from banger_hookspecs import VmSpec

_VM_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_TAP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

#: Command line keys Firecracker guests need; appended only when the core did not set them.
_CMDLINE_DEFAULTS = (
    ("console", "console=ttyS0"),
    # Reboot through the i8042 keyboard controller: Firecracker exits when the guest reboots.
    ("reboot", "reboot=k"),
    ("panic", "panic=1"),
    ("pci", "pci=off"),
)


class UnsupportedSpec(ValueError):
    """The spec asks for something Firecracker cannot do; the message says what to use instead."""


@dataclass(frozen=True)
class GuestFiles:
    """Paths as Firecracker sees them: host paths, or paths inside the jailer's chroot."""

    kernel: str
    initrd: str
    disks: tuple[str, ...]
    log: str
    vsock_uds: str


def check_spec(spec: VmSpec) -> None:
    """Refuse what Firecracker cannot run, before any process starts.

    Raises:
        UnsupportedSpec: user-mode networking, a bad id, tap name or MAC.
    """
    if not _VM_ID_RE.match(spec.vm_id):
        raise UnsupportedSpec(
            f"invalid VM id {spec.vm_id!r}: Firecracker ids are 1-64 characters of A-Z, a-z, 0-9, '-'"
        )
    nic = spec.nic
    if nic is None:
        return
    if nic.kind == "user":
        raise UnsupportedSpec(
            "Firecracker has no user-mode networking: use `--network bridge` (or the qemu VMM backend)"
        )
    if not nic.tap_name or not _TAP_RE.match(nic.tap_name):
        raise UnsupportedSpec(f"invalid tap name {nic.tap_name!r}: 1-15 characters of A-Z, a-z, 0-9, '_', '.', '-'")
    if not _MAC_RE.match(nic.mac):
        raise UnsupportedSpec(f"invalid MAC address {nic.mac!r}: expected six lowercase hex pairs")


def boot_args(cmdline: str) -> str:
    """The core's command line plus Firecracker's defaults for keys it did not set."""
    present = {word.split("=", 1)[0] for word in cmdline.split()}
    extra = [arg for key, arg in _CMDLINE_DEFAULTS if key not in present]
    return " ".join([cmdline.strip(), *extra]).strip()


def configuration_calls(spec: VmSpec, files: GuestFiles) -> list[tuple[str, dict[str, Any]]]:
    """``(path, body)`` of every PUT that configures ``spec``, in order, before ``InstanceStart``.

    Drives are attached in spec order and none is the "root device" (that
    would make Firecracker add ``root=`` to the command line): banger's
    initramfs finds the image as ``vda``, the overlay as ``vdb``, the work
    disk as ``vdc``.
    """
    check_spec(spec)
    calls: list[tuple[str, dict[str, Any]]] = [
        # Warning: at Info Firecracker logs every API request, and the daemon polls GET / for the VM's life.
        ("/logger", {"log_path": files.log, "level": "Warning", "show_level": True, "show_log_origin": False}),
        ("/machine-config", {"vcpu_count": spec.vcpus, "mem_size_mib": spec.memory_mib, "smt": False}),
        (
            "/boot-source",
            {"kernel_image_path": files.kernel, "initrd_path": files.initrd, "boot_args": boot_args(spec.cmdline)},
        ),
    ]
    for index, (disk, path) in enumerate(zip(spec.disks, files.disks, strict=True)):
        drive_id = f"disk{index}_{disk.role}"  # Firecracker ids: alphanumerics and underscores only
        calls.append(
            (
                f"/drives/{drive_id}",
                {"drive_id": drive_id, "path_on_host": path, "is_root_device": False, "is_read_only": disk.read_only},
            )
        )
    if spec.nic is not None:
        calls.append(
            (
                "/network-interfaces/eth0",
                {"iface_id": "eth0", "host_dev_name": spec.nic.tap_name, "guest_mac": spec.nic.mac},
            )
        )
    if spec.vsock_cid is not None:
        calls.append(("/vsock", {"guest_cid": int(spec.vsock_cid), "uds_path": files.vsock_uds}))
    return calls
