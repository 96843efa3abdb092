"""An unprivileged daemon's Firecracker, jailed by the root side (``HostOps.spawn_jailed_vmm``).

The test process is root and plays bangerd-root (the real :class:`NetlinkHostOps`
with its ``JailOps``); the driver runs in a forked child that dropped to the
owner (``nobody``) and reaches the root side through a pipe, as the daemon
reaches bangerd-root through its socket. Real jailer and Firecracker (v1.12.1
fixture); the guest itself cannot boot on this lab's PVM hosts, so the test
ends at the accepted InstanceStart.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any

import pluggy
import pytest

import banger_hookspecs
from banger_core.common.context import UnprivilegedHostOps
from banger_core.host.netops import NetlinkHostOps
from banger_core.testing import RecordingProgress
from banger_firecracker.driver import FirecrackerDriver, FirecrackerLaunchError
from banger_hookspecs import HostOps, PluginContext, VmSpec
from banger_hookspecs.process import read_proc_stat

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="plays bangerd-root: the jailer needs root"),
]

OWNER = pwd.getpwnam("nobody")
#: The venv's interpreter lives under /root (0700) here, out of the owner's reach: the console pump
#: the owner starts runs under the system Python (same 3.11) with copies of the packages it imports.
SYSTEM_PYTHON = "/usr/bin/python3"
OWNER_PYTHONPATH = ""


@pytest.fixture(scope="module", autouse=True)
def owner_site() -> Iterator[str]:
    """The contract and pluggy copied where the owner can read them (a venv or tox dir may be root's only)."""
    global OWNER_PYTHONPATH
    site = Path(tempfile.mkdtemp(prefix="bfc-owner-site-"))
    try:
        for package in (banger_hookspecs, pluggy):
            shutil.copytree(Path(package.__file__).parent, site / package.__name__)
        for path in (site, *site.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        OWNER_PYTHONPATH = str(site)
        yield OWNER_PYTHONPATH
    finally:
        shutil.rmtree(site)


class ForwardedHostOps(UnprivilegedHostOps):
    """The owner's host ops: ``spawn_jailed_vmm`` goes to the root process over a pipe (bangerd-root's role)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def spawn_jailed_vmm(
        self, jailer: str, firecracker: str, vm_id: str, uid: int, gid: int, chroot_base: str, console_fifo: str
    ) -> int:
        self.connection.send(("spawn", (jailer, firecracker, vm_id, uid, gid, chroot_base, console_fifo)))
        kind, value = self.connection.recv()
        if kind == "error":
            raise value
        return int(value)


Pause = Callable[[dict[str, Any]], None]


def as_owner(
    work: Callable[[HostOps, Pause], dict[str, Any]],
    root_ops: HostOps | None,
    while_running: Pause = lambda facts: None,
) -> dict[str, Any]:
    """Run ``work(host_ops, pause)`` in a child that is the owner; serve its spawn requests with ``root_ops``.

    The child's ``host_ops`` forward ``spawn_jailed_vmm`` here (or are plain
    :class:`UnprivilegedHostOps` when ``root_ops`` is None: no helper).
    ``pause(facts)`` in the child hands ``facts`` to ``while_running`` here and
    waits for it to finish (the VM is running then). Returns what ``work`` returned.
    """
    parent, child = Pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe, always exits
        try:
            os.setgroups([])
            os.setgid(OWNER.pw_gid)
            os.setuid(OWNER.pw_uid)
            sys.executable = SYSTEM_PYTHON
            os.environ["PYTHONPATH"] = OWNER_PYTHONPATH

            def pause(facts: dict[str, Any]) -> None:
                child.send(("running", facts))
                child.recv()

            host_ops = ForwardedHostOps(child) if root_ops is not None else UnprivilegedHostOps()
            child.send(("result", work(host_ops, pause)))
        except BaseException as exc:  # everything goes back to the test
            child.send(("failed", f"{type(exc).__name__}: {exc}"))
        finally:
            os._exit(0)
    try:
        while True:
            kind, value = parent.recv()
            if kind == "spawn" and root_ops is not None:
                try:
                    parent.send(("ok", root_ops.spawn_jailed_vmm(*value)))
                except Exception as exc:  # the child raises it as the client would
                    parent.send(("error", exc))
            elif kind == "running":
                try:
                    while_running(value)
                finally:
                    parent.send(("go", None))
            elif kind == "failed":
                raise AssertionError(f"the owner's daemon failed: {value}")
            else:
                return dict(value)
    finally:
        os.waitpid(pid, 0)


@pytest.fixture
def owner_spec(make_spec: Callable[..., VmSpec], guest_kernel, guest_initrd: Path, run_dir: Path) -> VmSpec:
    """A spec whose every file is the owner's (as in the owner's state directory)."""
    shutil.copyfile(guest_kernel.vmlinux, run_dir / "vmlinux")
    shutil.copyfile(guest_initrd, run_dir / "initrd")
    spec = make_spec(kernel=run_dir / "vmlinux", initrd=run_dir / "initrd")
    for path in (run_dir, *run_dir.iterdir()):
        os.chown(path, OWNER.pw_uid, OWNER.pw_gid)
    return spec


@pytest.fixture
def chroot_base() -> Iterator[Path]:
    """Root's jail base in the sticky /tmp (same filesystem as the run dir: the files are hard-linked)."""
    base = Path(tempfile.mkdtemp(prefix="bjail-", dir="/tmp"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def owner_context(plugin_context: PluginContext, host_ops: HostOps, **config: object) -> PluginContext:
    return dataclasses.replace(
        plugin_context,
        config={**plugin_context.config, **config},
        host_ops=host_ops,
        owner_uid=OWNER.pw_uid,
        owner_gid=OWNER.pw_gid,
    )


def test_owner_daemon_runs_firecracker_jailed_through_the_root_side(
    plugin_context: PluginContext, firecracker_binaries, owner_spec: VmSpec, chroot_base: Path
) -> None:
    config = {
        "firecracker_bin": str(firecracker_binaries.firecracker),
        "jailer_bin": str(firecracker_binaries.jailer),
        "jailer_chroot_base": str(chroot_base),
    }
    root_ops = NetlinkHostOps(config, owner_uid=OWNER.pw_uid)
    spec = owner_spec
    jail = chroot_base / "firecracker" / spec.vm_id
    root = jail / "root"
    seen: dict[str, Any] = {}

    def launch(host_ops: HostOps, pause: Pause) -> dict[str, Any]:
        driver = FirecrackerDriver(owner_context(plugin_context, host_ops, **config))
        progress = RecordingProgress()
        proc = driver.launch(spec, progress)
        pause({"pid": proc.pid, "start_time": proc.start_time, "socket": proc.control_socket, "extra": proc.extra})
        driver.kill(proc)
        return {"steps": progress.steps, "lines": progress.lines}

    def while_running(facts: dict[str, Any]) -> None:
        seen.update(facts)
        pid = facts["pid"]
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"\nUid:\t{OWNER.pw_uid}\t{OWNER.pw_uid}\t{OWNER.pw_uid}\t{OWNER.pw_uid}\n" in status
        assert Path(f"/proc/{pid}/root").stat().st_ino == root.stat().st_ino
        assert facts["socket"] == str(root / "run" / "firecracker.socket")
        assert facts["extra"]["jail_dir"] == str(root)
        # The owner linked the guest's files in after the jailer handed root/ over: same inodes, nothing copied.
        assert (root / "vmlinux").stat().st_ino == spec.kernel.stat().st_ino
        for index, disk in enumerate(spec.disks):
            linked = (root / f"disk{index}-{disk.role}.img").stat()
            assert (linked.st_ino, linked.st_uid) == (disk.path.stat().st_ino, OWNER.pw_uid)
        # Firecracker's console went through the FIFO into the capped serial log.
        assert "Running Firecracker v1.12.1" in spec.serial_log.read_text(errors="replace")
        assert not (spec.run_dir / "console.fifo").exists()

    result = as_owner(launch, root_ops, while_running)
    assert result["steps"] == ["starting Firecracker in the jailer (through bangerd-root)", "configuring Firecracker"]
    assert [line for line in result["lines"] if line.startswith("PUT ")] == [
        "PUT /logger: 204",
        "PUT /machine-config: 204",
        "PUT /boot-source: 204",
        "PUT /drives/disk0_image: 204",
        "PUT /drives/disk1_overlay: 204",
        "PUT /drives/disk2_work: 204",
        "PUT /actions: 204",
    ]
    # Killed by the owner's driver: the process is gone and reaped by the root side, the links are gone,
    # the originals stay; what only root may remove (the jail directory, device nodes) waits for the next start.
    assert read_proc_stat(seen["pid"]) is None
    assert not (root / "vmlinux").exists() and not (root / "disk1-overlay.img").exists()
    assert all(disk.path.exists() for disk in spec.disks)


def test_a_launch_failing_after_the_spawn_leaves_no_jailed_firecracker(
    plugin_context: PluginContext, firecracker_binaries, owner_spec: VmSpec, chroot_base: Path
) -> None:
    """The console pump failing (as it did where the owner could not import it) must not leak the VMM."""
    config = {
        "firecracker_bin": str(firecracker_binaries.firecracker),
        "jailer_bin": str(firecracker_binaries.jailer),
        "jailer_chroot_base": str(chroot_base),
    }
    spawned: list[int] = []

    class Recording(NetlinkHostOps):
        def spawn_jailed_vmm(self, *args: Any) -> int:
            pid = super().spawn_jailed_vmm(*args)
            spawned.append(pid)
            return pid

    def launch(host_ops: HostOps, pause: Pause) -> dict[str, Any]:
        import banger_firecracker.driver as driver_module

        def no_pump(reader: int, log: Path) -> None:
            raise OSError(f"the console log pump for {log} failed to start (exit status 1)")

        driver_module.start_log_pump_from = no_pump  # in the owner's child only
        driver = FirecrackerDriver(owner_context(plugin_context, host_ops, **config))
        try:
            driver.launch(owner_spec, RecordingProgress())
        except OSError as exc:
            return {"error": str(exc)}
        return {"error": None}

    result = as_owner(launch, Recording(config, owner_uid=OWNER.pw_uid))
    assert result["error"] is not None and result["error"].startswith("the console log pump for ")
    assert len(spawned) == 1
    assert read_proc_stat(spawned[0]) is None, "the jailed Firecracker outlived the failed launch"


def test_without_a_root_helper_firecracker_runs_unjailed_unless_required(
    plugin_context: PluginContext, firecracker_binaries, owner_spec: VmSpec
) -> None:
    config = {"firecracker_bin": str(firecracker_binaries.firecracker), "jailer_bin": str(firecracker_binaries.jailer)}

    def required(host_ops: HostOps, pause: Pause) -> dict[str, Any]:
        ctx = owner_context(plugin_context, host_ops, use_jailer=True, **config)
        try:
            FirecrackerDriver(ctx).launch(owner_spec, RecordingProgress())
        except FirecrackerLaunchError as exc:
            return {"error": str(exc), "files": sorted(p.name for p in owner_spec.run_dir.iterdir())}
        return {"error": None}

    refused = as_owner(required, None)
    assert refused["error"] == (
        "use_jailer = true, but the Firecracker jailer needs root: install the services (`banger system install`) "
        "so bangerd-root starts it, run the daemon as root, or set use_jailer = false"
    )
    assert "console.fifo" not in refused["files"]

    def auto(host_ops: HostOps, pause: Pause) -> dict[str, Any]:
        driver = FirecrackerDriver(owner_context(plugin_context, host_ops, **config))
        progress = RecordingProgress()
        try:
            driver.kill(driver.launch(owner_spec, progress))
        except FirecrackerLaunchError as exc:
            # nobody is not in the kvm group: unjailed, InstanceStart cannot open /dev/kvm (the jailer's own
            # /dev/kvm node, made for the owner, is what let the jailed launch above start the instance).
            assert "/dev/kvm" in str(exc)
        return {"lines": progress.lines, "steps": progress.steps}

    fallback = as_owner(auto, None)
    assert fallback["steps"] == ["starting Firecracker", "configuring Firecracker"]
    assert "Firecracker runs without the jailer: the Firecracker jailer needs root: " in "\n".join(fallback["lines"])
    assert f"--api-sock {owner_spec.run_dir}/fc.sock" in "\n".join(fallback["lines"])
