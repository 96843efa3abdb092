"""The jailer's per-VM chroot: the files a jailed Firecracker may see, laid out before it starts.

The jailer builds ``<chroot base>/<exec file name>/<vm id>/root``, creates
device nodes there, chowns it to the jail uid (mode 0700), chroots and drops
privileges. Everything Firecracker opens afterwards must already be inside:
banger hard-links the kernel, initrd and disks in (a copy only when the
chroot is on another filesystem; the shared image is never copied when a
link works) and creates the log file owned by the jail uid.

Two ways in: a root daemon lays the jail out under the VM's run directory
before it runs the jailer itself (:func:`prepare_jail`); an owner daemon asks
bangerd-root (``HostOps.spawn_jailed_vmm``), which runs the jailer in its
root-owned ``jailer_chroot_base``, and links the files in as the owner once the
jailer has handed ``root/`` over (:func:`populate_jail`).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from banger_firecracker.payloads import GuestFiles
from banger_hookspecs import Progress, VmSpec

JAIL_DIR = "jail"
#: Where bangerd-root builds jails unless ``jailer_chroot_base`` says otherwise (the jailer's own default).
DEFAULT_CHROOT_BASE = "/srv/jailer"
#: Where the jailed Firecracker listens, inside the chroot.
API_SOCKET_IN_JAIL = "/run/firecracker.socket"
LOG_IN_JAIL = "/firecracker.log"
VSOCK_IN_JAIL = "/vsock.sock"


@dataclass(frozen=True)
class Jail:
    """A prepared chroot.

    Attributes:
        chroot_base: what the jailer gets as ``--chroot-base-dir``.
        directory: ``<base>/<exec name>/<vm id>``: removed when the VM stops.
        root: the chroot itself.
        files: paths as the jailed Firecracker sees them.
    """

    chroot_base: Path
    directory: Path
    root: Path
    files: GuestFiles

    def host_path(self, jailed: str) -> Path:
        """The host path of a path inside the chroot."""
        return self.root / jailed.lstrip("/")


def _link_or_copy(source: Path, target: Path, progress: Progress) -> None:
    source = source.resolve(strict=True)  # a symlink would dangle inside the chroot
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        progress.log(f"cannot hard-link {source} into the jail ({exc.strerror}): copying it")
        shutil.copyfile(source, target)
        shutil.copymode(source, target)


def _own(path: Path, uid: int, gid: int) -> None:
    info = path.stat()
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.chown(path, uid, gid)


def prepare_jail(spec: VmSpec, exec_file: str, uid: int, gid: int, progress: Progress) -> Jail:
    """Lay out the chroot for ``spec`` under ``spec.run_dir/jail`` before a root daemon runs the jailer.

    A stale jail is replaced. Writable disks are chowned to ``uid:gid`` (a hard
    link shares the inode, so the VM's own disk file changes owner); the
    read-only image is only linked and must be readable by ``uid``.
    """
    base = spec.run_dir / JAIL_DIR
    directory = base / Path(exec_file).name / spec.vm_id
    if directory.exists():
        # Left by a VMM that died: links and device nodes only, never the files they point at.
        shutil.rmtree(directory)
    (directory / "root").mkdir(parents=True, mode=0o700)
    base.chmod(0o700)
    return populate_jail(spec, base, directory, uid, gid, progress)


def populate_jail(spec: VmSpec, chroot_base: Path, directory: Path, uid: int, gid: int, progress: Progress) -> Jail:
    """Link the kernel, initrd and disks into ``directory/root`` and create the log there.

    A root daemon calls it before the jailer starts; an owner daemon whose jail
    bangerd-root started calls it once the jailed Firecracker runs (the jailer
    has then handed ``root`` to the owner), before configuring it.
    """
    root = directory / "root"
    _link_or_copy(spec.kernel, root / "vmlinux", progress)
    _link_or_copy(spec.initrd, root / "initrd", progress)
    disks = []
    for index, disk in enumerate(spec.disks):
        name = f"disk{index}-{disk.role}.img"
        _link_or_copy(disk.path, root / name, progress)
        if not disk.read_only:
            _own(root / name, uid, gid)
        disks.append(f"/{name}")
    log = root / LOG_IN_JAIL.lstrip("/")
    log.touch(mode=0o600)
    _own(log, uid, gid)
    files = GuestFiles(
        kernel="/vmlinux", initrd="/initrd", disks=tuple(disks), log=LOG_IN_JAIL, vsock_uds=VSOCK_IN_JAIL
    )
    return Jail(chroot_base=chroot_base, directory=directory, root=root, files=files)


def jailer_argv(jailer: str, exec_file: str, vm_id: str, uid: int, gid: int, jail: Jail) -> list[str]:
    """``jailer ... -- --api-sock /run/firecracker.socket`` (the jailer passes ``--id`` on itself)."""
    return [
        jailer,
        *("--id", vm_id, "--exec-file", exec_file, "--uid", str(uid), "--gid", str(gid)),
        *("--chroot-base-dir", str(jail.chroot_base)),
        "--",
        *("--api-sock", API_SOCKET_IN_JAIL),
    ]


def remove_jail(directory: Path) -> None:
    """Delete a jail directory (its files are links or copies; the originals stay).

    For a jail bangerd-root made, ``directory`` is its ``root/``: the owner
    empties it but cannot remove what is root's (the directories above, the
    jailer's ``dev/``); bangerd-root replaces those when the VM starts again.
    """
    shutil.rmtree(directory, ignore_errors=True)
