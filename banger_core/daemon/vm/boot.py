"""Powering a VM on and off: network attach, VMM launch, readiness wait, halt, and what a dead VMM said."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from banger_core.api.state import VmState
from banger_core.common.errors import BangerError, OperationFailed
from banger_core.common.ssh import SshGuestShell, SshTarget, banner_ready, close_master
from banger_core.daemon import guest
from banger_core.daemon.agent.client import agent_client_for, guest_cid
from banger_core.daemon.crashpoint import crash_point
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.state.models import Vm
from banger_core.daemon.vm import disks, ports
from banger_core.daemon.vm.disks import OVERLAY_DISK, WORK_DISK
from banger_core.daemon.vm.handles import HandleStore, VmHandles
from banger_core.daemon.vm.records import VmRecords
from banger_core.daemon.vm.views import info
from banger_hookspecs import Disk, NetAttachment, NicRequest, Progress, VmProcess, VmSpec
from banger_hookspecs.boot import READY_MARKER
from banger_hookspecs.logpump import rotated
from banger_hookspecs.process import wait_gone

if TYPE_CHECKING:
    from banger_core.daemon.vm.warm import Template, Templates

log = logging.getLogger("banger.vms")

STOP_TIMEOUT = 20.0
#: How long a VMM that its backend killed or stopped gets to exit before we stop waiting to reap it.
REAP_TIMEOUT = 5.0
SERIAL_TAIL_LINES = 15


def serial_log(rt: Runtime, vm_id: str) -> Path:
    return rt.layout.vm_dir(vm_id) / "serial.log"


def serial_tail(rt: Runtime, vm_id: str, lines: int = SERIAL_TAIL_LINES) -> str:
    try:
        with open(serial_log(rt, vm_id), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no serial output)"
    tail = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail) if tail else "(no serial output)"


def control_path(rt: Runtime, vm_id: str) -> Path:
    return rt.layout.vm_run_dir(vm_id) / "ssh.sock"


def ssh_target(rt: Runtime, vm: Vm, host: str, port: int) -> SshTarget:
    return SshTarget(
        name=vm.name,
        host=host,
        port=port,
        key=str(rt.keys.key),
        known_hosts=str(rt.keys.known_hosts),
        control_path=str(control_path(rt, vm.id)),
    )


#: Whether banger's key gets into the guest's sshd at ``target`` (the last step of readiness).
SshProbe = Callable[[SshTarget], bool]


def ssh_login_works(target: SshTarget) -> bool:
    """Run ``true`` in the guest over ssh: ready means sshd accepts banger's key, not merely that it listens."""
    probe = subprocess.run([*target.argv(connect_timeout=5), "true"], capture_output=True, timeout=30, check=False)
    if probe.returncode != 0:
        log.debug("ssh probe of %s: %s", target.name, probe.stderr.decode(errors="replace").strip())
    return probe.returncode == 0


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A cold VM's work disk holds file_sync files owned by root: so does the tar stream."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def reap(proc: VmProcess) -> None:
    """Collect a stopped VMM's exit status, whichever backend started it.

    VMM processes are the daemon's children (until a daemon restart), and a
    backend may not wait for them: without this each stopped VM would stay a
    ``<defunct>`` entry under bangerd for the daemon's lifetime. Only that exact
    process (pid + start time) is collected, so other subprocesses keep theirs.
    """
    wait_gone(proc.pid, proc.start_time, REAP_TIMEOUT)


class Power:
    """Boots and halts VMs; callers hold the VM's lock."""

    def __init__(
        self,
        rt: Runtime,
        store: Store,
        records: VmRecords,
        handles: HandleStore,
        ssh_probe: SshProbe,
        templates: Templates,
    ) -> None:
        self.rt = rt
        self.templates = templates
        self.ssh_probe = ssh_probe
        self.store = store
        self.records = records
        self.handles = handles
        #: Restored VMs whose sshd nobody has logged in to yet, each with the lock its first ssh user holds.
        self._ssh_unconfirmed: dict[str, threading.Lock] = {}
        self._ssh_lock = threading.Lock()

    def boot(self, vm: Vm, progress: Progress, template: Template | None = None) -> None:
        """Boot ``vm`` cold, or restore it from ``template`` (a :class:`~banger_core.daemon.vm.warm.Template`
        whose key matches the VM) and make it the VM's own before anyone reaches it."""
        vmlinux, initrd = self.store.kernel_files(vm.kernel)
        rootfs = self.store.rootfs(vm.image)
        self.store.get_image(vm.image)
        vmm = self.rt.vmm(vm.backend)
        vm = self.records.set_state(vm.id, VmState.STARTING, {"last_error": None})
        attachment: NetAttachment | None = None
        proc: VmProcess | None = None
        root = self.rt.layout.vm_dir(vm.id)
        run_dir = self.rt.layout.vm_run_dir(vm.id)
        try:
            run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # The first VM on a backend sets its host side up (a usernet daemon's first bridged VM).
            net = self.rt.ready_network(vm.network, progress)
            progress.step("attaching network")
            try:
                attachment = net.attach(
                    NicRequest(
                        vm_id=vm.id,
                        vm_name=vm.name,
                        mac=vm.mac,
                        guest_ip=vm.guest_ip or "",
                        host_access=vm.host_access,
                        published=ports.forwards(vm.ports),
                    )
                )
            except BaseException:
                self.rt.forget_network(vm.network)  # a bridge deleted behind our back is set up again next time
                raise
            self.handles.write(vm.id, VmHandles(net=attachment))
            serial = serial_log(self.rt, vm.id)
            serial.write_bytes(b"")
            rotated(serial).unlink(missing_ok=True)  # this boot's console only
            vm_disks: tuple[Disk, ...] = (
                Disk(rootfs, True, "image"),
                Disk(root / OVERLAY_DISK, False, "overlay"),
                Disk(root / WORK_DISK, False, "work"),
            )
            spec = VmSpec(
                vm_id=vm.id,
                name=vm.name,
                kernel=vmlinux,
                initrd=initrd,
                # A restored guest never reads its command line again: the template's keeps the argv identical.
                cmdline=template.cmdline if template else guest.kernel_cmdline(vm.name, attachment.guest),
                disks=vm_disks,
                vcpus=vm.vcpus,
                memory_mib=vm.memory_mib,
                nic=attachment.nic,
                # A restore keeps the template's devices: it had no vsock (QEMU's agent is on virtio-serial).
                vsock_cid=None if template is not None else guest_cid(vm.id),
                run_dir=run_dir,
                serial_log=serial,
            )
            booted: Literal["cold", "warm"] = "cold"
            identity: Future[guest.GuestIdentity] | None = None
            if template is not None:
                snapshots = self.templates.snapshots(vm.backend)
                assert snapshots is not None  # the template's key names a backend that saved it
                try:
                    # The VM's host key is made while QEMU loads the saved state.
                    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="keygen") as keygen:
                        identity = keygen.submit(guest.new_identity, vm.name)
                        proc = snapshots.restore(spec, template.state, progress)
                except Exception as exc:
                    raise OperationFailed(
                        f"{exc}\n(restoring from the warm template of {vm.image}: `banger vm run --cold` boots "
                        f"without it, `banger image warm --rm {vm.image}` deletes it)"
                    ) from exc
                booted = "warm"
            else:
                progress.step(f"booting ({vm.backend})")
                proc = vmm.launch(spec, progress)
            self.handles.write(vm.id, VmHandles(net=attachment, vmm=proc, booted=booted))
            crash_point("start:launched")
            if template is not None:
                assert identity is not None
                self._make_own(vm, template, identity.result(), attachment, progress)
            if template is None or not template.agent:
                progress.step("waiting for ssh")
                # A restored guest prints no boot marker; its identity step has just (re)started sshd.
                self._wait_ready(vm, proc, attachment, sshd_started=template is not None)
            else:
                # Ready: the agent answered. sshd is still reloading on the VM's own host key; nothing
                # here needs it (file_sync and `vm run`'s command go through the agent), so the ssh
                # handshake is paid by the first ssh user, which waits for it (confirm_ssh).
                with self._ssh_lock:
                    self._ssh_unconfirmed[vm.id] = threading.Lock()
            if template is not None:
                self._sync_files(vm, attachment, template.agent, progress)
        except BaseException as exc:
            message = self._boot_failure(vm, exc, proc, attachment)
            if isinstance(exc, BangerError):
                raise type(exc)(message) from exc
            raise OperationFailed(message) from exc
        vm = self.records.set_state(vm.id, VmState.RUNNING, {"started_at": datetime.now(UTC)})
        progress.step(f"{vm.name} is running")
        self.rt.pm.call_event("banger_vm_started", vm=info(vm))

    def confirm_ssh(self, vm: Vm, handles: VmHandles) -> None:
        """Before a restored VM's first ssh user: wait until sshd accepts banger's key, strictly checked.

        A no-op for every other VM (a cold boot's readiness was that login already). The probe's
        master connection stays up, so the caller's own ssh reuses it.
        """
        with self._ssh_lock:
            gate = self._ssh_unconfirmed.get(vm.id)
        if gate is None:
            return
        with gate:
            with self._ssh_lock:
                if vm.id not in self._ssh_unconfirmed:
                    return  # another caller confirmed it meanwhile
            assert handles.vmm is not None and handles.net is not None
            self._wait_ready(vm, handles.vmm, handles.net, sshd_started=True)
            with self._ssh_lock:
                self._ssh_unconfirmed.pop(vm.id, None)

    def forget_ssh(self, vm_id: str) -> None:
        """The VM stopped: nothing left to confirm."""
        with self._ssh_lock:
            self._ssh_unconfirmed.pop(vm_id, None)

    def _make_own(
        self,
        vm: Vm,
        template: Template,
        identity: guest.GuestIdentity,
        attachment: NetAttachment,
        progress: Progress,
    ) -> None:
        """Give the restored guest its own identity (and address) and pin its new host key, before the first ssh."""
        if template.agent:
            self.templates.make_own(vm.id, identity, attachment, progress)
            self.rt.keys.pin(f"{vm.name}.vm", identity.host_key_public)
            if template.login is not None:
                template.login.save(self.rt.layout.vm_dir(vm.id))
            return
        # An image whose guest has no agent yet: the VM keeps the template's identity (docs/warm-start.md).
        log.warning("VM %s restored without a guest agent: it keeps the template's hostname and host key", vm.name)
        self.rt.keys.pin(f"{vm.name}.vm", template.host_key_public)

    def _sync_files(self, vm: Vm, attachment: NetAttachment, through_agent: bool, progress: Progress) -> None:
        """``file_sync`` into a restored guest: the template's work disk was made without it.

        The same staging as a cold create (:func:`banger_core.daemon.vm.disks.create_disks`), sent as
        a tar stream owned by root and unpacked into ``/root`` as root (by the guest agent, or over
        ssh for a guest without one), so the files are byte-identical.
        """
        entries = disks.file_sync_entries(self.rt)
        if not entries:
            return
        from banger_core.daemon.filesync import stage

        progress.step("file_sync into the restored VM")
        root = self.rt.layout.vm_dir(vm.id)
        with tempfile.TemporaryDirectory(dir=root, prefix=".sync-staging-") as staging:
            stage(entries, Path(staging), lambda warning: progress.step(f"file_sync: {warning}"))
            stream = io.BytesIO()
            with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(Path(staging).iterdir()):
                    tar.add(path, arcname=path.name, filter=_root_owned)
        unpack = ["tar", "-x", "--no-overwrite-dir", "-p", "-C", "/root", "-f", "-"]
        if through_agent:
            errors: list[bytes] = []
            status = agent_client_for(self.rt, vm.id).exec(
                unpack, stdout=lambda _: None, stderr=errors.append, stdin=stream.getvalue(), timeout=120
            )
            stderr = b"".join(errors)
        else:
            target = ssh_target(self.rt, vm, attachment.ssh_host, attachment.ssh_port)
            result = SshGuestShell(target).run(unpack, stdin=stream.getvalue(), timeout=120)
            status, stderr = result.returncode, result.stderr
        if status != 0:
            raise OperationFailed(f"file_sync into VM {vm.name} failed: {stderr.decode(errors='replace').strip()}")

    def _boot_failure(
        self, vm: Vm, exc: BaseException, proc: VmProcess | None, attachment: NetAttachment | None
    ) -> str:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            message = "start interrupted"
        else:
            message = str(exc) or type(exc).__name__
        log.warning("VM %s failed to start: %s", vm.name, message)
        close_master(control_path(self.rt, vm.id))
        self.forget_ssh(vm.id)
        if proc is not None:
            try:
                self.rt.vmm(vm.backend).kill(proc)
            except Exception:
                log.exception("killing %s after a failed start", vm.name)
            reap(proc)
        if attachment is not None:
            try:
                self.rt.network(vm.network).detach(attachment)
            except Exception:
                log.exception("detaching %s after a failed start", vm.name)
        self.handles.drop(vm.id)
        self.records.set_state(vm.id, VmState.ERROR, {"last_error": message})
        return message

    def _wait_ready(self, vm: Vm, proc: VmProcess, attachment: NetAttachment, *, sshd_started: bool = False) -> None:
        """Ready = sshd accepts banger's key. The serial marker or an SSH banner says when to try.

        ``sshd_started``: try the login straight away (a restored guest never prints the marker,
        and under TCG behind passt its banner can take longer than the banner probe waits).
        """
        vmm = self.rt.vmm(vm.backend)
        timeout = float(self.rt.config["ssh_ready_timeout"])
        deadline = time.monotonic() + timeout
        target = ssh_target(self.rt, vm, attachment.ssh_host, attachment.ssh_port)
        marker = guest.MarkerWatch(serial_log(self.rt, vm.id), READY_MARKER.encode())
        checks = 0
        while time.monotonic() < deadline:
            # Poll briskly (a boot under KVM takes about a second), check the VMM every 2 s.
            if checks % 10 == 0 and not vmm.is_running(proc):
                raise OperationFailed(
                    f"VM {vm.name}'s {vm.backend} process exited during boot: {self.why_dead(vm, proc)}"
                )
            checks += 1
            sshd_up = (
                sshd_started or marker.seen() or banner_ready(attachment.ssh_host, attachment.ssh_port, timeout=0.5)
            )
            if sshd_up and self.ssh_probe(target):
                return
            time.sleep(0.2)
        raise OperationFailed(
            f"VM {vm.name} did not become ssh-ready within {timeout:.0f} s "
            f"(raise ssh_ready_timeout if this host is slow); last serial lines: {serial_tail(self.rt, vm.id)}"
        )

    def why_dead(self, vm: Vm, proc: VmProcess) -> str:
        """The VMM's own account of its death (log + console tail), one line."""
        try:
            tail = str(self.rt.vmm(vm.backend).log_tail(proc, SERIAL_TAIL_LINES) or "")
        except Exception as exc:  # a backend without a useful log must not hide the error itself
            log.debug("log_tail of %s failed: %s", vm.name, exc)
            tail = ""
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        return " | ".join(lines[-SERIAL_TAIL_LINES:]) if lines else f"last serial lines: {serial_tail(self.rt, vm.id)}"

    def halt(self, vm: Vm, progress: Progress, *, force: bool, reason: str | None = None) -> None:
        if vm.state != VmState.STOPPING:
            vm = self.records.set_state(vm.id, VmState.STOPPING)
        handles = self.handles.read(vm.id)
        close_master(control_path(self.rt, vm.id))
        self.forget_ssh(vm.id)
        if handles is not None and handles.vmm is not None:
            proc = handles.vmm
            vmm = self.rt.vmm(vm.backend)
            if force:
                progress.step("killing the VM")
                vmm.kill(proc)
            else:
                progress.step("shutting down the guest")
                vmm.stop(proc, STOP_TIMEOUT)
            reap(proc)
        self.release_network(vm)
        vm = self.records.set_state(vm.id, VmState.STOPPED, {"last_error": reason})
        progress.step(f"{vm.name} stopped")
        self.rt.pm.call_event("banger_vm_stopped", vm=info(vm))

    def release_network(self, vm: Vm) -> None:
        """Give back the VM's NIC (tap, forward) and forget its handles; never fatal."""
        handles = self.handles.read(vm.id)
        if handles is not None and handles.net is not None:
            try:
                self.rt.network(vm.network).detach(handles.net)
            except Exception as exc:
                log.warning("detaching %s: %s", vm.name, exc)
        self.handles.drop(vm.id)
