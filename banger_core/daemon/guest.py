"""Host side of boot protocol v1: a VM's identity, its two disks, and its kernel command line.

The image's ``rootfs.ext4`` is never copied or written: each VM gets a sparse
overlay disk (``vdb``) that carries its identity in ``upper/`` and a work disk
(``vdc``) mounted at ``/root``. Both are built with ``mkfs.ext4 -d`` from a
staging directory, so no root, loop device or mount is needed, and creation
time does not depend on the image's size. See :mod:`banger_hookspecs.boot`.

Typical use by the VM lifecycle code::

    identity = new_identity("web")
    create_overlay_disk(vm_dir / "overlay.ext4", 8 << 30, identity)
    with tempfile.TemporaryDirectory() as staging:
        stage_authorized_keys(Path(staging), banger_public_key)
        create_work_disk(vm_dir / "work.ext4", 4 << 30, Path(staging))
    cmdline = kernel_cmdline("web", net)

The daemon pins the VM's host key through :class:`banger_core.common.ssh.SshKeys`;
tests that boot a guest without the daemon write a ``known_hosts`` file with
:mod:`banger_core.testing.guest`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from banger_core.common.errors import GuestSetupError
from banger_hookspecs import GuestNetConfig, boot
from banger_hookspecs.names import VM_NAME_RULE, is_vm_name

MKFS_EXT4 = "/usr/sbin/mkfs.ext4"
SSH_KEYGEN = "ssh-keygen"
#: Kernel arguments that keep the console quiet; each saves boot time under emulation.
QUIET_ARGS = ("quiet", "loglevel=3", "systemd.show_status=0")
#: Smallest disk mkfs.ext4 is asked to make (room for the journal and staged files).
MIN_DISK_SIZE = 16 << 20
_PUBLIC_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [^\r\n]*)?$")


@dataclass(frozen=True)
class GuestIdentity:
    """What makes one VM distinct from another of the same image.

    Attributes:
        hostname: the VM's name (a DNS label).
        machine_id: 32 lowercase hex digits for ``/etc/machine-id``.
        host_key_private: the ed25519 ssh host key, OpenSSH PEM format.
        host_key_public: ``ssh-ed25519 AAAA...`` (no comment), for known_hosts.
    """

    hostname: str
    machine_id: str
    host_key_private: bytes = field(repr=False)
    host_key_public: str


def validate_hostname(hostname: str) -> str:
    """Return ``hostname`` if it is a lowercase DNS label, else raise :class:`GuestSetupError`."""
    if not is_vm_name(hostname):
        raise GuestSetupError(f"invalid VM name {hostname!r}: {VM_NAME_RULE}")
    return hostname


def new_identity(hostname: str) -> GuestIdentity:
    """Generate a fresh identity: random machine-id and an ed25519 host key pair.

    The key is made by ``ssh-keygen`` in a private temporary directory that is
    removed before returning; only the returned object holds it.

    Raises:
        GuestSetupError: bad hostname, or ssh-keygen is missing or failed.
    """
    validate_hostname(hostname)
    with tempfile.TemporaryDirectory(prefix="banger-key-") as tmp:
        key = Path(tmp) / "key"
        try:
            subprocess.run(
                [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"root@{hostname}", "-f", str(key)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except FileNotFoundError:
            raise GuestSetupError("ssh-keygen not found: install openssh-client") from None
        except subprocess.CalledProcessError as exc:
            detail = exc.stderr.decode(errors="replace").strip()
            raise GuestSetupError(f"ssh-keygen failed to make a host key: {detail}") from None
        private = key.read_bytes()
        kind, blob, *_ = key.with_suffix(".pub").read_text().split()
    return GuestIdentity(
        hostname=hostname,
        machine_id=secrets.token_hex(16),
        host_key_private=private,
        host_key_public=f"{kind} {blob}",
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _mkfs(dest: Path, size: int, staging: Path, label: str) -> None:
    """Build an ext4 filesystem of ``size`` bytes from ``staging`` into ``dest``, atomically."""
    if size < MIN_DISK_SIZE:
        raise GuestSetupError(f"disk size {size} bytes is too small for {dest.name}: use at least 16M")
    if dest.exists():
        raise GuestSetupError(f"{dest} already exists: delete it first or pick another path")
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("xb") as fh:
            fh.truncate(size)  # sparse: only what mkfs writes takes space
        subprocess.run(
            [
                MKFS_EXT4,
                "-q",
                "-F",
                "-L",
                label,
                "-m",
                "0",
                # Lazy init keeps a multi-GiB disk to a few MiB written and ~15 ms. The root
                # directory gets the staging user's ids, like the files under it: the guest's
                # initramfs makes a disk root's when its root directory is not (mkfs alone
                # would make it 0:0 and hide an owner daemon's files from that check).
                "-E",
                f"lazy_itable_init=1,lazy_journal_init=1,root_owner={os.geteuid()}:{os.getegid()}",
                "-d",
                str(staging),
                str(tmp),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.link(tmp, dest)  # unlike rename, never replaces a file that appeared meanwhile
    except FileExistsError:
        raise GuestSetupError(f"{dest} already exists: delete it first or pick another path") from None
    except FileNotFoundError as exc:
        if exc.filename == MKFS_EXT4:
            raise GuestSetupError(f"{MKFS_EXT4} not found: install e2fsprogs") from None
        raise GuestSetupError(f"cannot create {dest}: {exc}") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise GuestSetupError(f"mkfs.ext4 failed for {dest.name}: {detail[-1] if detail else exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def stage_identity(staging_dir: Path, identity: GuestIdentity) -> None:
    """Lay out the overlay disk's tree: ``upper/etc/{hostname,machine-id,ssh/...}`` and empty ``work/``."""
    upper = staging_dir / boot.OVERLAY_UPPER
    ssh = upper / "etc" / "ssh"
    ssh.mkdir(parents=True, mode=0o755)
    for directory in (upper, upper / "etc", ssh):
        directory.chmod(0o755)  # overlayfs shows these as /, /etc and /etc/ssh
    (staging_dir / boot.OVERLAY_WORK).mkdir(mode=0o700)
    _write(upper / "etc" / "hostname", f"{identity.hostname}\n".encode(), 0o644)
    _write(upper / "etc" / "machine-id", f"{identity.machine_id}\n".encode(), 0o444)
    _write(ssh / "ssh_host_ed25519_key", identity.host_key_private, 0o600)
    _write(ssh / "ssh_host_ed25519_key.pub", f"{identity.host_key_public} root@{identity.hostname}\n".encode(), 0o644)


def create_overlay_disk(path: Path, size: int, identity: GuestIdentity) -> None:
    """Create the VM's sparse overlay disk (``vdb``) holding ``identity`` in ``upper/``.

    Args:
        path: the disk file to create (must not exist; its directory must).
        size: apparent size in bytes; the file is sparse.
        identity: from :func:`new_identity`.

    Raises:
        GuestSetupError: path exists, size too small, or mkfs failed; nothing is left behind.
    """
    with tempfile.TemporaryDirectory(prefix="banger-overlay-") as tmp:
        stage_identity(Path(tmp), identity)
        _mkfs(path, size, Path(tmp), "banger-overlay")


def stage_authorized_keys(staging_dir: Path, public_keys: str | Iterable[str]) -> Path:
    """Write ``.ssh/authorized_keys`` (0700 dir, 0600 file) into a work-disk staging dir.

    Args:
        staging_dir: the directory that becomes ``/root`` in the guest.
        public_keys: one OpenSSH public key line, or several.

    Returns:
        The authorized_keys path.

    Raises:
        GuestSetupError: a key is not a single OpenSSH public key line.
    """
    keys = [public_keys] if isinstance(public_keys, str) else list(public_keys)
    lines = []
    for key in keys:
        line = key.strip()
        if not _PUBLIC_KEY_RE.match(line):
            raise GuestSetupError(f"not an OpenSSH public key line: {line[:40]!r}: pass the contents of a .pub file")
        lines.append(line)
    if not lines:
        raise GuestSetupError("no public key given for the VM's authorized_keys")
    ssh_dir = staging_dir / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    target = ssh_dir / "authorized_keys"
    _write(target, ("\n".join(lines) + "\n").encode(), 0o600)
    return target


def create_work_disk(path: Path, size: int, staging_dir: Path) -> None:
    """Create the VM's work disk (``vdc``, mounted at ``/root``) from ``staging_dir``.

    The guest's initramfs makes the files root's on first boot, so the staging
    dir may belong to an unprivileged user.

    Raises:
        GuestSetupError: path exists, size too small, staging dir missing, or mkfs failed.
    """
    if not staging_dir.is_dir():
        raise GuestSetupError(f"work disk staging directory {staging_dir} does not exist")
    _mkfs(path, size, staging_dir, "banger-work")


def _ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise GuestSetupError(f"{what} {value!r} is not an IPv4 address") from None


def kernel_cmdline(hostname: str, net: GuestNetConfig | None, extra: Sequence[str] = (), *, quiet: bool = True) -> str:
    """The kernel command line for boot protocol v1.

    Args:
        hostname: the VM's name.
        net: eth0's static IPv4 config, or None for a VM without network.
        extra: more ``key=value`` arguments (a VMM adds its own later).
        quiet: keep kernel and systemd quiet on the console (saves boot time).

    Returns:
        A single line, e.g. ``console=ttyS0 panic=-1 quiet ... banger.proto=1 banger.hostname=web banger.ip=...``.

    Raises:
        GuestSetupError: invalid hostname, address, prefix or extra argument.
    """
    args = ["console=ttyS0", "panic=-1"]  # panic=-1: a dead guest reboots, which stops the VMM, never hangs
    if quiet:
        args += QUIET_ARGS
    args.append("net.ifnames=0")  # eth0 stays eth0 even in images with udev
    args += [f"{boot.CMDLINE_PROTO}={boot.BOOT_PROTOCOL}", f"{boot.CMDLINE_HOSTNAME}={validate_hostname(hostname)}"]
    if net is not None:
        address = _ipv4(net.address, "guest address")
        if not 0 < net.prefix <= 32:
            raise GuestSetupError(f"guest prefix length {net.prefix} is not between 1 and 32")
        args += [
            f"{boot.CMDLINE_IP}={address}/{net.prefix}",
            f"{boot.CMDLINE_GATEWAY}={_ipv4(net.gateway, 'gateway')}",
            f"{boot.CMDLINE_DNS}={_ipv4(net.dns, 'DNS server')}",
        ]
    for arg in extra:
        if not arg or any(ch.isspace() for ch in arg) or arg.startswith("banger."):
            raise GuestSetupError(f"invalid extra kernel argument {arg!r}: no spaces, and banger.* keys are reserved")
        args.append(arg)
    return " ".join(args)


class MarkerWatch:
    """Looks for ``marker`` in a growing console log, reading every byte once.

    Readiness polls several times a second while a guest boots: re-reading the
    whole log each time costs O(size) per poll. This keeps the offset reached
    and reads only what was appended; a log that was rotated or truncated (a
    different inode, or shorter than the offset) is read from its start. The
    last ``len(marker) - 1`` bytes are kept, so a marker split across two reads
    is still found.
    """

    def __init__(self, path: Path, marker: bytes) -> None:
        self.path = path
        self.marker = marker
        self.bytes_read = 0
        self._inode: int | None = None
        self._offset = 0
        self._carry = b""

    def seen(self) -> bool:
        """True once the marker has appeared in the log (since the last rotation)."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 -- closed below
        except OSError:
            return False
        with fh:
            info = os.fstat(fh.fileno())
            if info.st_ino != self._inode or info.st_size < self._offset:
                self._inode, self._offset, self._carry = info.st_ino, 0, b""
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        self.bytes_read += len(data)
        window = self._carry + data
        if self.marker in window:
            return True
        self._carry = window[-(len(self.marker) - 1) :] if len(self.marker) > 1 else b""
        return False
