"""``HostOps.spawn_jailed_vmm`` on the root side, with the real jailer and Firecracker (v1.12.1 fixture).

As root (bangerd-root's position): the owner is ``nobody``. The spawned process
must be Firecracker running as the owner inside its chroot, its API socket
answering the owner; every hostile request must be refused before anything is
created or started.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger_core.common.context import UnprivilegedHostOps
from banger_core.common.errors import NoRootHelper
from banger_core.host.netops import NetlinkHostOps
from banger_hookspecs.process import read_proc_stat, wait_gone

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="bangerd-root's side: the jailer needs root"),
]

VM_ID = "0123456789abcdef"
OWNER = pwd.getpwnam("nobody")


def ask_as_owner(socket_path: Path, request: bytes) -> bytes:
    """Send ``request`` to the jailed Firecracker's API from a child that runs as the owner, no exec."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's exit status carries the result
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(OWNER.pw_gid)
            os.setuid(OWNER.pw_uid)
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(10)
                client.connect(str(socket_path))
                client.sendall(request)
                os.write(write_end, client.recv(65536))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        data = answer.read()
    os.waitpid(child, 0)
    return data


@dataclass
class Setup:
    ops: NetlinkHostOps
    firecracker: str
    jailer: str
    base: Path
    fifo: Path
    reader: int

    def request(self, **overrides: object) -> dict[str, object]:
        values: dict[str, object] = {
            "jailer": self.jailer,
            "firecracker": self.firecracker,
            "vm_id": VM_ID,
            "uid": OWNER.pw_uid,
            "gid": OWNER.pw_gid,
            "chroot_base": str(self.base),
            "console_fifo": str(self.fifo),
        }
        values.update(overrides)
        return values


def _children() -> set[int]:
    """Pids whose parent is this test process."""
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == os.getpid():
            found.add(int(status.parent.name))
    return found


@pytest.fixture
def setup(firecracker_binaries) -> Iterator[Setup]:
    base = Path(tempfile.mkdtemp(prefix="bjail-", dir="/tmp"))  # root's, in the sticky /tmp
    base.chmod(0o711)
    owner_dir = Path(tempfile.mkdtemp(prefix="bown-", dir="/tmp"))
    os.chown(owner_dir, OWNER.pw_uid, OWNER.pw_gid)
    fifo = owner_dir / "console.fifo"
    os.mkfifo(fifo, 0o600)
    os.chown(fifo, OWNER.pw_uid, OWNER.pw_gid)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    config = {
        "firecracker_bin": str(firecracker_binaries.firecracker),
        "jailer_bin": str(firecracker_binaries.jailer),
        "jailer_chroot_base": str(base),
    }
    yield Setup(
        NetlinkHostOps(config, owner_uid=OWNER.pw_uid),
        str(firecracker_binaries.firecracker.resolve()),
        str(firecracker_binaries.jailer.resolve()),
        base,
        fifo,
        reader,
    )
    os.close(reader)
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(owner_dir, ignore_errors=True)


def test_firecracker_runs_as_the_owner_in_its_chroot_and_answers_the_owner(setup: Setup) -> None:
    groups = os.getgroups()
    os.setgroups([0, 42])  # a helper with supplementary groups (root, shadow): the VMM must get none
    try:
        pid = setup.ops.spawn_jailed_vmm(**setup.request())  # type: ignore[arg-type]
    finally:
        os.setgroups(groups)
    proc_stat = read_proc_stat(pid)
    assert proc_stat is not None
    try:
        root = setup.base / "firecracker" / VM_ID / "root"
        socket_path = root / "run" / "firecracker.socket"
        # Bounded wait for the jailer to exec Firecracker and Firecracker to bind its socket.
        assert wait_for(lambda: socket_path.exists()), f"no API socket at {socket_path}"
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"\nUid:\t{OWNER.pw_uid}\t{OWNER.pw_uid}\t{OWNER.pw_uid}\t{OWNER.pw_uid}\n" in status
        assert f"\nGid:\t{OWNER.pw_gid}\t{OWNER.pw_gid}\t{OWNER.pw_gid}\t{OWNER.pw_gid}\n" in status
        assert [line.split() for line in status.splitlines() if line.startswith("Groups:")] == [["Groups:"]]
        assert Path(f"/proc/{pid}/root").stat().st_ino == root.stat().st_ino  # chrooted into the jail
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[:3] == [b"/firecracker", b"--id", VM_ID.encode()]
        assert argv[-3:] == [b"--api-sock", b"/run/firecracker.socket", b""]  # nothing but what the helper adds
        # The jail: root's directories down to root/, which the jailer handed to the owner.
        for directory, owner, mode in (
            (setup.base / "firecracker", 0, 0o711),
            (setup.base / "firecracker" / VM_ID, 0, 0o711),
            (root, OWNER.pw_uid, 0o700),
        ):
            info = directory.stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (owner, mode), directory
        assert socket_path.stat().st_uid == OWNER.pw_uid
        answer = ask_as_owner(socket_path, b"GET /machine-config HTTP/1.1\r\nHost: localhost\r\n\r\n").decode()
        assert answer.startswith("HTTP/1.1 200")
        assert '"vcpu_count":1' in answer.replace(" ", "")
        # Its console (stdout and stderr) reaches the owner's FIFO.
        console = bytearray()

        def console_says_firecracker() -> bool:
            try:
                console.extend(os.read(setup.reader, 65536))
            except BlockingIOError:
                pass
            return b"Firecracker" in console

        assert wait_for(console_says_firecracker), bytes(console)
    finally:
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid, proc_stat.start_time, 10)


def wait_for(condition: Callable[[], bool], attempts: int = 200) -> bool:
    """Poll ``condition`` (bounded: ``attempts`` x 50 ms)."""
    for _ in range(attempts):
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"firecracker": "/bin/sh"}, "firecracker '/bin/sh' is not the configured firecracker"),
        ({"jailer": "/tmp/jailer"}, "jailer '/tmp/jailer' is not the configured jailer"),
        ({"vm_id": "../../../etc"}, "invalid VM id '../../../etc'"),
        ({"vm_id": "0123456789abcdef/../x"}, "invalid VM id"),
        ({"uid": 0}, "uid 0 is not the owner's"),
        ({"gid": 0}, "gid 0 is not the owner's primary group"),
        ({"uid": True}, "invalid uid True"),
        ({"chroot_base": "/tmp"}, "chroot base '/tmp' is not the configured jailer_chroot_base"),
        ({"console_fifo": "/etc/passwd"}, "console /etc/passwd is not a FIFO owned by uid 65534"),
    ],
)
def test_hostile_requests_are_refused_and_create_nothing(
    setup: Setup, overrides: dict[str, object], message: str
) -> None:
    before = _children()
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        setup.ops.spawn_jailed_vmm(**setup.request(**overrides))  # type: ignore[arg-type]
    assert list(setup.base.iterdir()) == []
    assert _children() == before
    assert not Path("/etc/firecracker").exists()


def test_a_symlink_to_the_fifo_is_refused(setup: Setup) -> None:
    link = setup.fifo.with_name("link.fifo")
    link.symlink_to(setup.fifo)
    with pytest.raises(ValueError, match=r"^console .*/link\.fifo is not a FIFO owned by uid 65534$"):
        setup.ops.spawn_jailed_vmm(**setup.request(console_fifo=str(link)))  # type: ignore[arg-type]
    assert list(setup.base.iterdir()) == []


def test_binaries_and_base_the_owner_could_replace_are_refused(setup: Setup, firecracker_binaries) -> None:
    # The configured binary in a directory the owner can write: even an exact request is refused.
    owner_bin = Path(tempfile.mkdtemp(prefix="bbin-", dir="/tmp"))
    try:
        shutil.copy2(firecracker_binaries.firecracker, owner_bin / "firecracker")
        os.chown(owner_bin, OWNER.pw_uid, OWNER.pw_gid)
        ops = NetlinkHostOps(
            {**setup.ops.config, "firecracker_bin": str(owner_bin / "firecracker")}, owner_uid=OWNER.pw_uid
        )
        with pytest.raises(ValueError, match=f"^firecracker {owner_bin}/firecracker: {owner_bin} is not owned by root"):
            ops.spawn_jailed_vmm(**setup.request(firecracker=str(owner_bin / "firecracker")))  # type: ignore[arg-type]
    finally:
        shutil.rmtree(owner_bin)
    # A chroot base others may write into (no sticky bit): the jailer would work in it as root.
    setup.base.chmod(0o777)
    with pytest.raises(ValueError, match=f"^jailer_chroot_base {setup.base}: {setup.base} is writable by users"):
        setup.ops.spawn_jailed_vmm(**setup.request())  # type: ignore[arg-type]
    assert list(setup.base.iterdir()) == []
    # A process serving no owner starts nothing.
    with pytest.raises(ValueError, match="only for the owner bangerd-root serves"):
        NetlinkHostOps(setup.ops.config).spawn_jailed_vmm(**setup.request())  # type: ignore[arg-type]


def test_a_stale_jail_is_replaced_not_followed(setup: Setup) -> None:
    """A jail left by an earlier VM holds the owner's files: a planted symlink must not be written through."""
    stale = setup.base / "firecracker" / VM_ID / "root"
    stale.mkdir(parents=True)
    target = setup.base / "victim"
    target.write_text("root's file\n")
    (stale / "firecracker").symlink_to(target)
    pid = setup.ops.spawn_jailed_vmm(**setup.request())  # type: ignore[arg-type]
    proc_stat = read_proc_stat(pid)
    assert proc_stat is not None
    try:
        assert wait_for(lambda: (stale / "run" / "firecracker.socket").exists())
        assert target.read_text() == "root's file\n"
        assert not (stale / "firecracker").is_symlink()
    finally:
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid, proc_stat.start_time, 10)


def test_unprivileged_host_ops_name_the_fix() -> None:
    with pytest.raises(NoRootHelper, match=r"^the Firecracker jailer needs root: install the services") as refused:
        UnprivilegedHostOps().spawn_jailed_vmm("/j", "/f", VM_ID, 1000, 1000, "/srv/jailer", "/x")
    assert isinstance(refused.value, NotImplementedError)  # the driver's cue to run unjailed
    assert "\n" not in str(refused.value)
