"""Starting a jailed Firecracker for an unprivileged daemon: the root side of ``HostOps.spawn_jailed_vmm``.

The jailer must run as root (it chroots, makes device nodes, drops to a uid),
so an owner daemon asks ``bangerd-root`` to start it. Everything in the request
is checked against what the helper itself knows, never trusted:

* ``jailer`` and ``firecracker`` must be exactly the configured binaries
  (``jailer_bin`` / ``firecracker_bin``, else the helper's ``PATH``), resolved,
  regular files owned by root and writable by no one else, in directories no
  one but root can change: otherwise the owner could have root run a program
  of their choosing.
* ``vm_id`` must be a banger VM id (16 lowercase hex digits): it becomes a path
  component of the chroot.
* ``uid``/``gid`` must be the owner's (never 0): the jailed Firecracker runs as
  the owner, so the owner gains nothing they did not have.
* ``chroot_base`` must be the configured one (``jailer_chroot_base``, default
  ``/srv/jailer``), and it and every directory above it must be root's and
  changeable by no one else. The jailer works in it as root, by path, before it
  chroots: an owner-writable ancestor would let the owner swap in a symlink and
  have root copy the Firecracker binary over any file on the host. That is why
  the chroot does not live under the owner's state directory.
* ``console_fifo`` must be a FIFO owned by the owner (opened without following
  symlinks): the jailed process's stdout and stderr (the guest's serial console)
  go there, to the daemon's size-capping log pump.
* The jailer's argv is built here; the request carries no arguments of its own.

The helper removes a stale jail of the same id, creates ``<base>/firecracker/<id>``
(root's, 0711), then runs the jailer; the jailer creates ``root`` inside it and
hands it to the owner, who links the guest's files into it after the start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

from banger_core.common.names import VM_ID_RE

DEFAULT_CHROOT_BASE = "/srv/jailer"
#: Where the jailed Firecracker listens, inside its chroot.
API_SOCKET_IN_JAIL = "/run/firecracker.socket"
_BINARIES = {"jailer": "jailer_bin", "firecracker": "firecracker_bin"}
_ID_MAX = 2**32 - 2


def _check_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _ID_MAX:
        raise ValueError(f"invalid {what} {value!r}: expected an integer between 0 and {_ID_MAX}")
    return value


def _root_controlled(path: Path, what: str) -> None:
    """Refuse ``path`` unless no one but root can replace it or anything above it.

    Every component must be root's and not a symlink; a directory writable by
    group or others is accepted only with the sticky bit (``/tmp``), where
    others cannot rename root's entries.
    """
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{what} {path} must be an absolute path without '..'")
    current = Path("/")
    for part in ("", *path.parts[1:]):  # "" checks "/" itself
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            raise ValueError(f"{what} {path}: {current} does not exist") from None
        if stat.S_ISLNK(info.st_mode):
            raise ValueError(f"{what} {path}: {current} is a symlink; configure the resolved path")
        if info.st_uid != 0:
            raise ValueError(f"{what} {path}: {current} is not owned by root (uid {info.st_uid})")
        writable = bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
        sticky = bool(info.st_mode & stat.S_ISVTX)
        if writable and not (stat.S_ISDIR(info.st_mode) and sticky and current != path):
            raise ValueError(f"{what} {path}: {current} is writable by users other than root")


class JailOps:
    """The ``spawn_jailed_vmm`` half of :class:`banger_hookspecs.HostOps`, mixed into the root implementation.

    Attributes (set by the class it is mixed into):
        config: the helper's configuration (``jailer_bin``, ``firecracker_bin``,
            ``jailer_chroot_base``; unset binaries are looked up on ``PATH``).
        owner_uid: the only uid a jailed VMM may run as; None when the process
            serves no owner (then every request is refused).
    """

    config: Mapping[str, object]
    owner_uid: int | None

    def spawn_jailed_vmm(
        self, jailer: str, firecracker: str, vm_id: str, uid: int, gid: int, chroot_base: str, console_fifo: str
    ) -> int:
        """Start ``firecracker --api-sock /run/firecracker.socket`` through ``jailer``; return its pid.

        Raises:
            ValueError: any argument differs from what the helper allows (nothing is created then).
            OSError: the jailer could not be started.
        """
        if self.owner_uid is None:
            raise ValueError("jailed VMMs are started only for the owner bangerd-root serves (--owner-uid)")
        for value, what in ((jailer, "jailer"), (firecracker, "firecracker")):
            expected = self._configured_binary(what)
            if not isinstance(value, str) or value != expected:
                raise ValueError(f"{what} {value!r} is not the configured {what} ({expected})")
        if not isinstance(vm_id, str) or not VM_ID_RE.fullmatch(vm_id):
            raise ValueError(f"invalid VM id {vm_id!r}: expected 16 lowercase hex digits")
        owner = pwd.getpwuid(self.owner_uid)
        if _check_id(uid, "uid") != self.owner_uid or uid == 0:
            raise ValueError(f"uid {uid} is not the owner's ({self.owner_uid}): a jailed VMM runs as the owner")
        if _check_id(gid, "gid") != owner.pw_gid:
            raise ValueError(f"gid {gid} is not the owner's primary group ({owner.pw_gid})")
        base = self._chroot_base()
        if not isinstance(chroot_base, str) or chroot_base != str(base):
            raise ValueError(f"chroot base {chroot_base!r} is not the configured jailer_chroot_base ({base})")
        if not isinstance(console_fifo, str):
            raise ValueError(f"invalid console FIFO {console_fifo!r}")
        _root_controlled(base, "jailer_chroot_base")
        console = self._open_console(Path(console_fifo))
        try:
            jail = base / Path(firecracker).name / vm_id
            self._fresh_jail_dir(jail)
            argv = [
                jailer,
                *("--id", vm_id, "--exec-file", firecracker, "--uid", str(uid), "--gid", str(gid)),
                *("--chroot-base-dir", str(base), "--", "--api-sock", API_SOCKET_IN_JAIL),
            ]
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,  # the VM outlives the helper's and the daemon's sessions
                close_fds=True,
                cwd="/",
                env={},  # the jailer clears it too; nothing of the helper's leaks in
                extra_groups=[],  # the jailer sets uid and gid only: root's supplementary groups must not follow
                umask=0o077,  # the chroot and the API socket: the owner's alone
            )
        finally:
            os.close(console)
        # The VMM is the helper's child: reap it whenever it exits, so it never lingers as a zombie.
        threading.Thread(target=popen.wait, name=f"reap-jailer-{popen.pid}", daemon=True).start()
        return popen.pid

    def _configured_binary(self, what: str) -> str:
        configured = self.config.get(_BINARIES[what])
        found = str(configured) if configured else shutil.which(what)
        if not found:
            raise ValueError(f"{what} is not installed for bangerd-root: install it or set {_BINARIES[what]}")
        resolved = Path(found).resolve()
        _root_controlled(resolved, what)
        if not resolved.is_file() or not os.access(resolved, os.X_OK):
            raise ValueError(f"{what} {resolved} is not an executable file")
        return str(resolved)

    def _chroot_base(self) -> Path:
        return Path(str(self.config.get("jailer_chroot_base") or DEFAULT_CHROOT_BASE))

    def _open_console(self, path: Path) -> int:
        """A blocking write end of the owner's FIFO ``path`` (never a file the owner merely names)."""
        assert self.owner_uid is not None
        try:
            handle = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ValueError(f"console FIFO {path}: {exc.strerror}") from None
        try:
            info = os.fstat(handle)
            if not stat.S_ISFIFO(info.st_mode) or info.st_uid != self.owner_uid:
                raise ValueError(f"console {path} is not a FIFO owned by uid {self.owner_uid}")
            # Reopen the inode just checked; O_NONBLOCK: fail (ENXIO) instead of hanging when no reader is there.
            console = os.open(f"/proc/self/fd/{handle}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ValueError(f"console FIFO {path}: {exc.strerror} (the daemon must hold its read end)") from None
        finally:
            os.close(handle)
        os.set_blocking(console, True)  # the VMM's console writes wait for the pump instead of failing
        return console

    @staticmethod
    def _fresh_jail_dir(jail: Path) -> None:
        """``<base>/firecracker/<id>``, root's and empty: a stale jail's files are the owner's and untrusted."""
        jail.parent.mkdir(exist_ok=True)
        _root_controlled(jail.parent, "jail directory")
        if os.path.lexists(jail):
            shutil.rmtree(jail)  # fd-based on Linux: follows no symlink the owner planted
        jail.mkdir()
        for directory in (jail.parent, jail):
            # Whatever the umask: the owner must reach root/ inside, and list nothing.
            os.chmod(directory, 0o711)  # noqa: S103


__all__ = ["API_SOCKET_IN_JAIL", "DEFAULT_CHROOT_BASE", "JailOps"]
