"""The ``qemu`` VMM driver: launch, inspect and stop ``qemu-system-x86_64`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import cast

from banger_hookspecs import Availability, PluginContext, Progress, VmmDriver, VmProcess, VmSpec
from banger_hookspecs.logpump import start_log_pump
from banger_hookspecs.process import (
    MAX_SOCKET_PATH,
    format_log_tails,
    is_same_process,
    read_proc_stat,
    remove_stale_socket,
    signal_process,
    terminate,
    wait_gone,
)
from banger_qemu.argv import Accel, Machine, QemuOptions, build_argv
from banger_qemu.passt import (
    PASST_SOCKET,
    PasstError,
    find_passt,
    start_passt,
    stop_passt,
    uses_passt,
)
from banger_qemu.probe import find_binary, qemu_version, sandbox_option
from banger_qemu.qmp import QmpClient, QmpError
from banger_qemu.spawn import spawn_detached

BACKEND = "qemu"
QMP_SOCKET = "qmp.sock"
QEMU_LOG = "qemu.log"
VHOST_VSOCK = Path("/dev/vhost-vsock")
#: QMP run states in which the guest is gone even though QEMU still runs.
DEAD_STATES = frozenset({"internal-error", "guest-panicked", "shutdown", "io-error"})
LAUNCH_TIMEOUT = 30.0
#: How long QEMU gets to exit after SIGTERM before SIGKILL.
TERM_GRACE = 5.0
#: How long writing a template's migration stream may take (a 3 GiB TCG guest took ~1 s here).
MIGRATE_TIMEOUT = 120.0
#: The name QMP `getfd` files the state file's descriptor under for `migrate fd:NAME`.
STATE_FD_NAME = "banger-state"

PREFERENCE_KVM = 50
PREFERENCE_TCG = 10


class QemuLaunchError(Exception):
    """QEMU refused the configuration or exited before the guest ran."""


def resolve_accel(config_value: str, kvm: str) -> Accel:
    """``kvm`` only with hardware KVM (PVM-style software KVM cannot boot stock kernels), unless configured."""
    if config_value in ("kvm", "tcg"):
        return cast(Accel, config_value)
    return "kvm" if kvm == "hardware" else "tcg"


class QemuDriver(VmmDriver):
    """Runs VMs as ``qemu-system-x86_64 -M microvm`` (or q35) processes, controlled over QMP."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.machine = cast(Machine, ctx.config.get("qemu_machine") or "microvm")
        self.accel = resolve_accel(str(ctx.config.get("qemu_accel") or "auto"), ctx.host.kvm)
        # QEMU processes this driver started: polled so they never linger as zombies.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ probing

    def availability(self) -> Availability:
        """Usable when the binary runs; preferred over TCG when hardware KVM is there."""
        binary = find_binary(self.ctx)
        if binary is None:
            return Availability(False, 0, "qemu-system-x86_64 not found: apt-get install qemu-system-x86")
        version = qemu_version(binary)
        if version is None:
            return Availability(False, 0, f"{binary} does not run (try `{binary} --version`)")
        if self.accel == "kvm":
            if self.ctx.host.kvm in ("absent", "unusable"):
                return Availability(False, 0, f"qemu_accel = kvm but {self.ctx.host.kvm_detail}", version=version)
            if self.ctx.host.kvm == "software":
                return Availability(
                    True, PREFERENCE_TCG, f"qemu_accel = kvm on software KVM: {self.ctx.host.kvm_detail}", version
                )
            return Availability(True, PREFERENCE_KVM, f"QEMU {version} with hardware KVM", version)
        return Availability(True, PREFERENCE_TCG, f"QEMU {version} with TCG software emulation (slow)", version)

    def options(self, spec: VmSpec) -> QemuOptions:
        """Backend choices for ``spec`` on this host."""
        binary = find_binary(self.ctx)
        if binary is None:
            raise QemuLaunchError("qemu-system-x86_64 not found: apt-get install qemu-system-x86 or set qemu_bin")
        return QemuOptions(
            binary=binary,
            machine=self.machine,
            accel=self.accel,
            tsc_khz=self.ctx.host.tsc_khz,
            vsock=VHOST_VSOCK.exists(),
            qmp_socket=spec.run_dir / QMP_SOCKET,
            passt_socket=spec.run_dir / PASST_SOCKET if uses_passt(spec.nic, find_passt()) else None,
            sandbox=sandbox_option(binary),
        )

    # ------------------------------------------------------------------ launching

    def launch(self, spec: VmSpec, progress: Progress) -> VmProcess:
        """Start QEMU and return once QMP reports the guest running.

        Raises:
            QemuLaunchError: QEMU exited, refused an option, or never answered;
                the message carries the tail of QEMU's log and the serial console.
            ValueError: ``spec`` has a value QEMU must not see.
        """
        return self._start(spec, progress, None)

    # ------------------------------------------------------------------ snapshots

    def snapshot_compat(self) -> str:
        """What a saved state depends on besides the VM's spec: QEMU's version, machine and accelerator.

        A migration stream only loads into the same QEMU version and machine type (microvm has no
        versioned machine types), so a template saved under another one must not be restored.
        """
        binary = find_binary(self.ctx)
        version = qemu_version(binary) if binary is not None else None
        return f"qemu {version or 'unknown'} {self.machine} {self.accel}"

    def save_snapshot(self, proc: VmProcess, state_file: Path) -> None:
        """Pause the guest, write its migration stream to ``state_file``, then stop QEMU.

        The guest is stopped before the stream is written, so the disks QEMU has flushed match the
        saved RAM exactly: the caller keeps copies of them beside ``state_file``.

        Raises:
            QemuLaunchError: QMP failed or the migration did not complete; ``state_file`` is removed.
        """
        try:
            with QmpClient(Path(proc.control_socket), timeout=10.0) as qmp:
                qmp.execute("stop")
                # A descriptor handed over QMP, not `exec:cat > FILE`: -sandbox denies QEMU spawning a shell.
                state = os.open(state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                try:
                    qmp.execute_with_fd("getfd", {"fdname": STATE_FD_NAME}, state)
                finally:
                    os.close(state)
                qmp.execute("migrate", {"uri": f"fd:{STATE_FD_NAME}"})
                deadline = time.monotonic() + MIGRATE_TIMEOUT
                while True:
                    status = qmp.execute("query-migrate").get("status")
                    if status == "completed":
                        break
                    if status in ("failed", "cancelled") or time.monotonic() > deadline:
                        detail = qmp.execute("query-migrate").get("error-desc", status)
                        raise QemuLaunchError(f"saving the VM's state failed: {detail}")
                    time.sleep(0.05)
        except (QmpError, QemuLaunchError) as exc:
            state_file.unlink(missing_ok=True)
            raise QemuLaunchError(f"saving the VM's state failed: {exc}") from exc
        finally:
            self.kill(proc)

    def restore(self, spec: VmSpec, state_file: Path, progress: Progress) -> VmProcess:
        """Start QEMU for ``spec`` from the state in ``state_file`` and resume the guest.

        ``spec`` must describe the same devices as the VM that was saved (same vCPUs, memory,
        disks in the same order, a NIC of the same kind); its disks are the caller's copies of the
        snapshot-time disks. The guest resumes exactly where it was paused.

        Raises:
            QemuLaunchError: QEMU refused the stream (another QEMU version, other devices) or exited.
        """
        if not state_file.is_file():
            raise QemuLaunchError(f"VM {spec.name} failed to restore: no saved state at {state_file}")
        return self._start(spec, progress, state_file)

    # ------------------------------------------------------------------ launching

    def _start(self, spec: VmSpec, progress: Progress, incoming: Path | None) -> VmProcess:
        opts = self.options(spec)
        if max(len(str(opts.qmp_socket)), len(str(opts.passt_socket or ""))) > MAX_SOCKET_PATH:
            raise QemuLaunchError(
                f"run directory {spec.run_dir} is too long for a Unix socket path: use a shorter runtime_dir"
            )
        # The console goes through a pipe to a size-capping pump (a `-chardev file` grows forever);
        # QEMU opens the pipe's write end, inherited as an fd, by its /proc path.
        spec.serial_log.write_bytes(b"")
        # The saved state goes in as an inherited descriptor QEMU reads with `-incoming fd:N`.
        state = os.open(incoming, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW) if incoming is not None else None
        try:
            serial = start_log_pump(spec.serial_log)
            try:
                return self._launch(spec, opts, serial, progress, state)
            finally:
                os.close(serial)
        finally:
            if state is not None:
                os.close(state)

    def _launch(
        self, spec: VmSpec, opts: QemuOptions, serial: int, progress: Progress, incoming: int | None
    ) -> VmProcess:
        argv = build_argv(replace(spec, serial_log=Path(f"/proc/self/fd/{serial}")), opts)
        if incoming is None:
            progress.step(f"starting QEMU ({opts.machine}, {opts.accel.upper()})")
        else:
            # An inherited descriptor, not `exec:`: -sandbox denies QEMU spawning a shell.
            argv += ["-incoming", f"fd:{incoming}"]
            progress.step(f"restoring QEMU ({opts.machine}, {opts.accel.upper()}) from a template")
        if opts.sandbox is None:
            progress.log(f"{opts.binary} has no seccomp support (-sandbox): QEMU runs without a syscall filter")
        if spec.vsock_cid is not None and not opts.vsock:
            progress.log(f"{VHOST_VSOCK} is missing: the VM gets no vsock device")
        progress.log(" ".join(argv))
        remove_stale_socket(opts.qmp_socket)
        extra = {"log": str(spec.run_dir / QEMU_LOG), "serial_log": str(spec.serial_log), "machine": opts.machine}
        passt: subprocess.Popen[bytes] | None = None
        binary = find_passt()
        if opts.passt_socket is not None and spec.nic is not None and binary is not None:
            progress.step("starting passt (guest egress without host loopback)")
            try:
                passt, passt_start, _ = start_passt(binary, spec.nic, spec.run_dir)
            except PasstError as exc:
                raise QemuLaunchError(f"VM {spec.name} failed to start: {exc}") from exc
            self._children[passt.pid] = passt
            extra |= {"passt_pid": str(passt.pid), "passt_start_time": str(passt_start)}
        log_path = spec.run_dir / QEMU_LOG
        inherited = (serial,) if incoming is None else (serial, incoming)
        popen = spawn_detached(argv, log_path, spec.run_dir, pass_fds=inherited)
        self._children[popen.pid] = popen
        try:
            self._wait_running(popen, opts.qmp_socket, spec.name, extra, resume=incoming is not None)
            proc_stat = read_proc_stat(popen.pid)
            if proc_stat is None:
                raise QemuLaunchError(_failure(spec.name, "QEMU vanished right after starting", extra))
        except BaseException:
            popen.kill()
            popen.wait()
            self._children.pop(popen.pid, None)
            remove_stale_socket(opts.qmp_socket)
            self._stop_passt(extra, spec.run_dir)
            raise
        return VmProcess(BACKEND, popen.pid, proc_stat.start_time, str(opts.qmp_socket), extra)

    @staticmethod
    def _wait_running(
        popen: subprocess.Popen[bytes], qmp_socket: Path, name: str, extra: Mapping[str, str], *, resume: bool = False
    ) -> None:
        """Wait for the guest to run; with ``resume``, a restored guest arrives paused and gets ``cont``."""
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while time.monotonic() < deadline:
            code = popen.poll()
            if code is not None:
                raise QemuLaunchError(_failure(name, f"QEMU exited with status {code}", extra))
            try:
                with QmpClient(qmp_socket) as qmp:
                    status = qmp.execute("query-status").get("status")
                    # "paused" only once the whole stream is in ("inmigrate" while it loads).
                    if resume and status == "paused":
                        qmp.execute("cont")
                        status = qmp.execute("query-status").get("status")
            except QmpError:
                time.sleep(0.05)
                continue
            if status == "running":
                return
            if status in DEAD_STATES:
                raise QemuLaunchError(_failure(name, f"the guest stopped at once ({status})", extra))
            time.sleep(0.05)
        what = f"QEMU did not start the guest within {LAUNCH_TIMEOUT:.0f} s"
        raise QemuLaunchError(_failure(name, what, extra))

    # ------------------------------------------------------------------ inspecting

    def is_running(self, proc: VmProcess) -> bool:
        """Same process (pid + start time) and QMP answers with a live run state."""
        self._poll_children()
        if not is_same_process(proc.pid, proc.start_time):
            return False
        try:
            with QmpClient(Path(proc.control_socket)) as qmp:
                status = qmp.execute("query-status").get("status")
        except QmpError:
            return False
        return status not in DEAD_STATES

    def log_tail(self, proc: VmProcess, lines: int = 20) -> str:
        """Tail of QEMU's own log and of the serial console."""
        return _format_tail(proc.extra, lines)

    # ------------------------------------------------------------------ stopping

    def stop(self, proc: VmProcess, timeout: float) -> None:
        """ACPI power button (``system_powerdown``), then SIGTERM/SIGKILL after ``timeout``."""
        if is_same_process(proc.pid, proc.start_time):
            try:
                with QmpClient(Path(proc.control_socket)) as qmp:
                    qmp.execute("system_powerdown")
            except QmpError as exc:
                self.ctx.logger.info("QMP system_powerdown failed for pid %d: %s", proc.pid, exc)
            if wait_gone(proc.pid, proc.start_time, timeout):
                self.ctx.logger.info("QEMU pid %d: guest powered off", proc.pid)
            else:
                self.ctx.logger.warning(
                    "QEMU pid %d: guest did not power off within %.0f s; terminating QEMU", proc.pid, timeout
                )
                terminate(proc.pid, proc.start_time, TERM_GRACE)
        self._cleanup(proc)

    def kill(self, proc: VmProcess) -> None:
        """SIGKILL now (if it is still the same process), then remove the QMP socket."""
        if signal_process(proc.pid, proc.start_time, signal.SIGKILL):
            wait_gone(proc.pid, proc.start_time, TERM_GRACE)
        self._cleanup(proc)

    def _cleanup(self, proc: VmProcess) -> None:
        self._poll_children()
        if not is_same_process(proc.pid, proc.start_time):
            remove_stale_socket(Path(proc.control_socket))
            # passt serves only this QEMU: once it is gone, so is passt (also after a daemon restart).
            self._stop_passt(proc.extra, Path(proc.control_socket).parent)

    def _stop_passt(self, extra: Mapping[str, str], run_dir: Path) -> None:
        if "passt_pid" in extra:
            stop_passt(int(extra["passt_pid"]), int(extra["passt_start_time"]), run_dir / PASST_SOCKET)
            self._poll_children()

    def _poll_children(self) -> None:
        for pid, popen in list(self._children.items()):
            if popen.poll() is not None:
                del self._children[pid]


def _format_tail(extra: Mapping[str, str], lines: int = 20) -> str:
    return format_log_tails({"QEMU log": extra.get("log"), "serial console": extra.get("serial_log")}, lines)


def _failure(name: str, what: str, extra: Mapping[str, str]) -> str:
    tail = _format_tail(extra)
    return f"VM {name} failed to start: {what}" + (f"\n{tail}" if tail else "")
