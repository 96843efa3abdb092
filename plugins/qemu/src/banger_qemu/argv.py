"""The QEMU command line for a :class:`~banger_hookspecs.VmSpec`: a pure function, unit-tested.

Every value that reaches a QEMU option string is validated or escaped here:
QEMU splits option values on ``,`` (``,,`` is a literal comma), and a drive's
``file=`` would accept pseudo-protocols such as ``json:``, so disks name their
file through ``file.driver=file,file.filename=``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from banger_hookspecs import NicSpec, PortForward, VmSpec, boot, guest_agent
from banger_hookspecs.names import VM_NAME_RULE, is_vm_name

Machine = Literal["microvm", "q35"]
Accel = Literal["kvm", "tcg"]

_TAP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class QemuOptions:
    """Backend choices that are not part of the VM spec.

    Attributes:
        binary: the ``qemu-system-x86_64`` to run.
        machine: ``microvm`` (virtio-mmio, fast) or ``q35`` (virtio-pci fallback).
        accel: ``kvm`` or ``tcg``.
        tsc_khz: host TSC frequency; passed to microvm guests under TCG.
        vsock: True when ``/dev/vhost-vsock`` exists (vhost-vsock needs it).
        qmp_socket: where QEMU listens for QMP.
        passt_socket: the VM's passt socket: an isolated user-mode NIC connects
            there (``-netdev stream``) instead of running QEMU's slirp with no egress.
    """

    binary: str
    machine: Machine
    accel: Accel
    tsc_khz: int | None
    vsock: bool
    qmp_socket: Path
    passt_socket: Path | None = None


def option_value(value: str | Path, what: str) -> str:
    """``value`` escaped for a QEMU ``key=value,...`` option string.

    Raises:
        ValueError: the value contains control characters (a newline would
            end the option on QEMU's side).
    """
    return _plain_path(Path(value), what).replace(",", ",,")


def _plain_path(path: Path, what: str) -> str:
    """A path QEMU takes verbatim (``-kernel``): only control characters are refused."""
    text = str(path)
    if not text or any(not ch.isprintable() for ch in text):
        raise ValueError(f"invalid {what} {text!r}: empty or contains control characters")
    return text


def _device(machine: Machine, kind: str) -> str:
    """``virtio-blk-device`` on microvm (virtio-mmio), ``virtio-blk-pci`` on q35."""
    return f"virtio-{kind}-device" if machine == "microvm" else f"virtio-{kind}-pci"


def kernel_cmdline(spec: VmSpec, opts: QemuOptions) -> str:
    """The core's command line plus what this machine needs, never overriding the core's keys."""
    present = {word.split("=", 1)[0] for word in spec.cmdline.split()}
    extra: list[str] = []
    if "console" not in present:
        extra.append("console=ttyS0")  # both machines put the serial port on ttyS0
    if opts.machine == "microvm":
        if "reboot" not in present:
            # Triple-fault reboot: microvm has no keyboard controller, and
            # reboot=k costs ~1.5 s on power-off.
            extra.append("reboot=t")
        if opts.accel == "tcg" and opts.tsc_khz and "tsc_early_khz" not in present:
            # Without it microvm under TCG hangs ~1 boot in 5 calibrating the TSC against the PIT.
            extra.append(f"tsc_early_khz={opts.tsc_khz}")
    return " ".join([spec.cmdline.strip(), *extra]).strip()


def forward_address(fwd: PortForward) -> ipaddress.IPv4Address:
    """The host address of a user-mode forward (slirp's or passt's), with its ports checked.

    Raises:
        ValueError: not an IPv4 address, or a port outside 1-65535.
    """
    address = ipaddress.ip_address(fwd.host_address)  # raises ValueError on anything else
    if not isinstance(address, ipaddress.IPv4Address):
        raise ValueError(f"user networking forwards IPv4 only, got {fwd.host_address}")
    for port in (fwd.host_port, fwd.guest_port):
        if not 0 < port < 65536:
            raise ValueError(f"invalid port {port} in forward {fwd}: use 1-65535")
    return address


def _nic_args(nic: NicSpec, machine: Machine, passt_socket: Path | None) -> list[str]:
    if not _MAC_RE.match(nic.mac):
        raise ValueError(f"invalid MAC address {nic.mac!r}: expected six lowercase hex pairs like 52:54:00:12:34:56")
    if nic.kind == "tap":
        if not nic.tap_name or not _TAP_RE.match(nic.tap_name):
            raise ValueError(f"invalid tap name {nic.tap_name!r}: 1-15 characters of A-Z, a-z, 0-9, '_', '.', '-'")
        netdev = f"tap,id=net0,ifname={nic.tap_name},script=no,downscript=no"
    elif passt_socket is not None and not nic.host_access:
        # passt carries the forwards itself and maps no guest address to host loopback.
        netdev = f"stream,id=net0,server=off,addr.type=unix,addr.path={option_value(passt_socket, 'passt socket path')}"
    else:
        forwards = []
        for fwd in nic.forwards:
            if fwd.protocol == "udp" and not nic.host_access:
                raise ValueError(
                    f"UDP port {fwd.host_port} cannot reach an isolated usernet guest here: QEMU's restrict=on drops "
                    "every UDP datagram the guest sends, replies included; install passt (with a default route) "
                    "or create the VM with --host-access"
                )
            address = forward_address(fwd)
            forwards.append(f",hostfwd={fwd.protocol}:{address}:{fwd.host_port}-:{fwd.guest_port}")
        # restrict=on: the guest opens no connection at all (10.0.2.2 would be the host's 127.0.0.1);
        # the forwards still reach it. Only an explicit host_access lifts it.
        netdev = "user,id=net0" + ("" if nic.host_access else ",restrict=on") + "".join(forwards)
    return ["-netdev", netdev, "-device", f"{_device(machine, 'net')},netdev=net0,mac={nic.mac}"]


def build_argv(spec: VmSpec, opts: QemuOptions) -> list[str]:
    """The full QEMU argv (no shell) that runs ``spec``.

    Args:
        spec: the VM to run.
        opts: backend choices (machine, accelerator, sockets).

    Returns:
        argv, ``opts.binary`` first.

    Raises:
        ValueError: a name, path, MAC or forward in ``spec`` is not acceptable.
    """
    if not is_vm_name(spec.name):
        raise ValueError(f"invalid VM name {spec.name!r}: {VM_NAME_RULE}")
    if spec.vcpus < 1 or spec.memory_mib < 64:
        raise ValueError(f"invalid VM size: {spec.vcpus} vCPUs, {spec.memory_mib} MiB (need >= 1 vCPU, >= 64 MiB)")
    argv = [
        opts.binary,
        "-name",
        spec.name,
        "-M",
        opts.machine,
        "-accel",
        opts.accel,
        "-cpu",
        "host" if opts.accel == "kvm" else "max",
        "-smp",
        str(spec.vcpus),
        "-m",
        f"{spec.memory_mib}M",
        "-nographic",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-kernel",
        _plain_path(spec.kernel, "kernel path"),
        "-initrd",
        _plain_path(spec.initrd, "initrd path"),
        "-append",
        kernel_cmdline(spec, opts),
        "-chardev",
        f"file,id=serial0,path={option_value(spec.serial_log, 'serial log path')}",
        "-serial",
        "chardev:serial0",
        "-chardev",
        f"socket,id=qmp,path={option_value(opts.qmp_socket, 'QMP socket path')},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
    ]
    for index, disk in enumerate(spec.disks):
        drive = (
            f"if=none,id=disk{index},format=raw,file.driver=file,"
            f"file.filename={option_value(disk.path, f'{disk.role} disk path')}"
        )
        # Writable disks are sparse files: let guest discards punch holes again.
        drive += ",readonly=on" if disk.read_only else ",discard=unmap,detect-zeroes=unmap"
        argv += ["-drive", drive, "-device", f"{_device(opts.machine, 'blk')},drive=disk{index}"]
    if spec.nic is not None:
        argv += _nic_args(spec.nic, opts.machine, opts.passt_socket)
    # The guest agent's channel: virtio-serial needs no vhost device, so it works on every host.
    agent_socket = option_value(spec.run_dir / boot.AGENT_SOCKET, "agent socket path")
    argv += [
        "-device",
        f"{_device(opts.machine, 'serial')},id=agentbus",
        "-chardev",
        f"socket,id=agent,path={agent_socket},server=on,wait=off",
        "-device",
        f"virtserialport,bus=agentbus.0,chardev=agent,name={guest_agent.PORT_NAME}",
    ]
    if spec.vsock_cid is not None and opts.vsock:
        kind = "vhost-vsock-device" if opts.machine == "microvm" else "vhost-vsock-pci"
        argv += ["-device", f"{kind},guest-cid={int(spec.vsock_cid)}"]
    return argv
