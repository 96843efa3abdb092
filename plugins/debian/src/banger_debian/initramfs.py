"""banger's initramfs: static busybox, the kernel's virtio/overlay/vsock modules, and ``/init``,
plus the guest agent ``/init`` starts before the image's init.

The archive is a gzip-compressed newc cpio (what every x86 kernel with
``CONFIG_RD_GZIP`` unpacks), written in Python so it needs no root and is
reproducible. ``/init`` (``init.sh`` next to this module) implements boot
protocol v1 (:mod:`banger_hookspecs.boot`).
"""

from __future__ import annotations

import gzip
import io
import lzma
import subprocess
from importlib import resources
from pathlib import Path

from banger_debian.cpio import CpioWriter
from banger_debian.moddep import module_name, resolve
from banger_hookspecs import guest_agent

#: Modules the initramfs loads (dependency order comes from modules.dep).
#: virtio_pci serves q35-style machines, virtio_mmio microvm and Firecracker.
INITRAMFS_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "overlay",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    # the guest agent's channel under QEMU (virtio-serial: no vhost needed)
    "virtio_console",
    # the VMM's ACPI power button (QEMU system_powerdown) reaches the image's acpid through these
    "button",
    "evdev",
)

#: busybox applets ``init.sh`` calls (linked in /bin; shell builtins need none).
APPLETS = (
    "sh",
    "cat",
    "chmod",
    "chown",
    "chroot",
    "hostname",
    "insmod",
    "ln",
    "ip",
    "mkdir",
    "mount",
    "poweroff",
    "readlink",
    "rm",
    "setsid",
    "sleep",
    "stat",
    "switch_root",
)

#: Where a static busybox is looked for (Debian's busybox-static installs /bin/busybox).
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))

#: The guest agent inside the initramfs.
AGENT_PATH = "banger-agent"

DIRECTORIES = ("bin", "dev", "proc", "sys", "lib", "lib/modules", "mnt", "mnt/image", "mnt/overlay", "newroot")


class InitramfsError(RuntimeError):
    """The initramfs cannot be built from these inputs; the message says why."""


def init_script() -> bytes:
    """The ``/init`` shell script shipped with this package."""
    return resources.files("banger_debian").joinpath("init.sh").read_bytes()


def agent_script() -> bytes:
    """The guest agent (:mod:`banger_hookspecs.guest_agent`) as the initramfs ships it."""
    return Path(guest_agent.__file__).read_bytes()


def busybox_applets(busybox: Path) -> set[str]:
    """Applets compiled into ``busybox`` (``busybox --list``)."""
    try:
        out = subprocess.run([str(busybox), "--list"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise InitramfsError(f"cannot run {busybox} --list ({exc}): install busybox-static") from None
    return set(out.stdout.decode().split())


def _module_bytes(path: Path) -> bytes:
    """Module contents, uncompressed (busybox insmod takes plain ``.ko`` files)."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise InitramfsError(f"module {path.name} uses a compression banger cannot unpack (use .ko, .ko.xz or .ko.gz)")


def build_initramfs(
    module_dir: Path, busybox: Path, modules: tuple[str, ...] = INITRAMFS_MODULES
) -> tuple[bytes, list[str]]:
    """Build the gzip-compressed initramfs for the kernel whose modules are in ``module_dir``.

    Args:
        module_dir: ``.../lib/modules/<release>`` holding ``modules.dep``.
        busybox: a statically linked busybox.
        modules: module names to load at boot.

    Returns:
        ``(archive bytes, module names in load order)``.

    Raises:
        MissingModuleError: the kernel lacks one of ``modules``.
        InitramfsError: busybox is unusable or lacks an applet ``/init`` needs.
    """
    available = busybox_applets(busybox)
    missing = [applet for applet in APPLETS if applet not in available]
    if missing:
        raise InitramfsError(f"{busybox} lacks applets {', '.join(missing)}: install Debian's busybox-static")
    order = resolve(module_dir, modules)

    raw = io.BytesIO()
    archive = CpioWriter(raw)
    archive.directory(".")
    for directory in DIRECTORIES:
        archive.directory(directory)
    # The kernel opens /dev/console before running /init; without the node, init has no output.
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    names = []
    for index, relative in enumerate(order):
        name = module_name(relative)
        names.append(name)
        archive.file(f"lib/modules/{index:02d}-{name}.ko", _module_bytes(module_dir / relative), 0o644)
    archive.file("init", init_script(), 0o755)
    # /init copies it into the new root's /run (tmpfs): the image itself is never touched.
    archive.file(AGENT_PATH, agent_script(), 0o644)
    archive.close()
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0), names
