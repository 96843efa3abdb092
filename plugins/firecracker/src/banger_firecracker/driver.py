"""The ``firecracker`` VMM driver: one Firecracker process per VM, configured through its API socket."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from banger_firecracker.api import FirecrackerApi, FirecrackerApiError
from banger_firecracker.jail import (
    API_SOCKET_IN_JAIL,
    DEFAULT_CHROOT_BASE,
    LOG_IN_JAIL,
    VSOCK_IN_JAIL,
    Jail,
    jailer_argv,
    populate_jail,
    prepare_jail,
    remove_jail,
)
from banger_firecracker.payloads import GuestFiles, check_spec, configuration_calls
from banger_firecracker.probe import MIN_VERSION, TESTED_SERIES, binary_version, find_binary, show
from banger_hookspecs import Availability, PluginContext, Progress, VmmDriver, VmProcess, VmSpec
from banger_hookspecs.logpump import start_log_pump, start_log_pump_from
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

BACKEND = "firecracker"
API_SOCKET = "fc.sock"
LOG = "firecracker.log"
VSOCK_SOCKET = "vsock.sock"
#: The jailed Firecracker's console (stdout and stderr) when bangerd-root starts it: read by the log pump.
CONSOLE_FIFO = "console.fifo"
API_READY_TIMEOUT = 10.0
TERM_GRACE = 5.0
#: Above QEMU's best (hardware KVM): Firecracker boots faster and is banger's primary VMM.
PREFERENCE = 100


class FirecrackerLaunchError(Exception):
    """Firecracker refused the configuration or exited before the guest ran."""


class FirecrackerDriver(VmmDriver):
    """Runs each VM as ``firecracker --api-sock <run_dir>/fc.sock --id <vm id>``, jailed when it can be."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        # None (unset): the jailer whenever it is installed and something privileged can run it.
        setting = ctx.config.get("use_jailer")
        self.use_jailer: bool | None = None if setting is None else bool(setting)
        # Processes this driver started: polled so they never linger as zombies.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ probing

    def availability(self) -> Availability:
        """Usable only with the binary, a supported version and hardware KVM."""
        binary = find_binary(self.ctx, "firecracker_bin", "firecracker")
        if binary is None:
            return Availability(False, 0, "firecracker not found (install Firecracker's official release)")
        version = binary_version(binary)
        if version is None:
            return Availability(False, 0, f"{binary} does not report a version (try `{binary} --version`)")
        shown = show(version)
        if version[:2] < MIN_VERSION:
            return Availability(
                False, 0, f"Firecracker {shown} is older than v{MIN_VERSION[0]}.{MIN_VERSION[1]}", shown
            )
        if self.ctx.host.kvm != "hardware":
            return Availability(False, 0, f"Firecracker needs hardware KVM: {self.ctx.host.kvm_detail}", shown)
        if self.use_jailer is True and find_binary(self.ctx, "jailer_bin", "jailer") is None:
            return Availability(False, 0, "use_jailer is set but jailer is not found", shown)
        reason = f"Firecracker {shown} with hardware KVM"
        if version[:2] != TESTED_SERIES:
            reason += f" (tested with v{TESTED_SERIES[0]}.{TESTED_SERIES[1]}.x)"
        return Availability(True, PREFERENCE, reason, shown)

    # ------------------------------------------------------------------ launching

    def launch(self, spec: VmSpec, progress: Progress) -> VmProcess:
        """Start Firecracker, configure it through the API, start the instance.

        Raises:
            FirecrackerLaunchError: Firecracker is missing, exited, or refused a
                call; the message carries its ``fault_message`` and log tail.
            UnsupportedSpec: the spec needs something Firecracker lacks (user networking).
        """
        check_spec(spec)
        binary = find_binary(self.ctx, "firecracker_bin", "firecracker")
        if binary is None:
            raise FirecrackerLaunchError("firecracker not found: install Firecracker's release or set firecracker_bin")
        version = binary_version(binary)
        if version is None or version[:2] < MIN_VERSION:
            found = show(version) if version else "no version"
            raise FirecrackerLaunchError(
                f"{binary} reports {found}; banger needs Firecracker v{MIN_VERSION[0]}.{MIN_VERSION[1]} or later"
            )
        if self.ctx.host.kvm != "hardware":
            progress.log(f"warning: {self.ctx.host.kvm_detail}")
        jailer = self._jailer()
        if jailer is not None and os.geteuid() != 0:
            try:
                return self._launch_through_helper(spec, binary, jailer, progress)
            except NotImplementedError as exc:  # no root helper: these host ops cannot run the jailer
                if self.use_jailer:
                    raise FirecrackerLaunchError(f"use_jailer = true, but {exc}") from None
                progress.log(f"Firecracker runs without the jailer: {exc}")
                jailer = None
        jail: Jail | None = None
        if jailer is not None:
            argv, jail = self._jailed_argv(spec, binary, jailer, progress)
            api_socket = jail.host_path(API_SOCKET_IN_JAIL)
            files = jail.files
            log_path = jail.host_path(files.log)
            vsock_socket = jail.host_path(files.vsock_uds)
        else:
            api_socket = spec.run_dir / API_SOCKET
            log_path = spec.run_dir / LOG
            vsock_socket = spec.run_dir / VSOCK_SOCKET
            files = GuestFiles(
                kernel=str(spec.kernel),
                initrd=str(spec.initrd),
                disks=tuple(str(d.path) for d in spec.disks),
                log=str(log_path),
                vsock_uds=str(vsock_socket),
            )
            argv = [binary, "--api-sock", str(api_socket), "--id", spec.vm_id]
            log_path.write_bytes(b"")  # Firecracker's logger needs the file to exist
        extra = {
            "log": str(log_path),
            "serial_log": str(spec.serial_log),
            "api_socket": str(api_socket),
            "vsock_socket": str(vsock_socket),
        }
        if jail is not None:
            extra["jail_dir"] = str(jail.directory)
        try:
            for path in (api_socket, vsock_socket):
                if len(str(path)) > MAX_SOCKET_PATH:
                    raise FirecrackerLaunchError(
                        f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes: use a shorter runtime_dir"
                    )
                remove_stale_socket(path)
            progress.step("starting Firecracker" + (" in the jailer" if jail else ""))
            progress.log(" ".join(argv))
            spec.serial_log.write_bytes(b"")
            serial = start_log_pump(spec.serial_log)  # capped: the guest may print forever
            try:
                with log_path.open("ab") as log:
                    popen = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=serial,  # the guest's serial console
                        stderr=log,
                        start_new_session=True,  # the VM survives the daemon
                        close_fds=True,
                        cwd=spec.run_dir,
                        # Jailed: the socket Firecracker binds is usable by the daemon's group at once, no chmod race.
                        umask=0o007 if jail else 0o077,
                    )
            finally:
                os.close(serial)
        except BaseException:
            self._cleanup_files(extra)
            raise
        self._children[popen.pid] = popen

        def exited() -> str | None:
            code = popen.poll()
            return None if code is None else f"Firecracker exited with status {code}"

        try:
            self._configure(exited, api_socket, spec, lambda: files, extra, progress)
            proc_stat = read_proc_stat(popen.pid)
            if proc_stat is None or proc_stat.zombie:
                raise FirecrackerLaunchError(_failure(spec.name, "Firecracker exited right after InstanceStart", extra))
        except BaseException:
            self._terminate_child(popen)
            self._cleanup_files(extra)
            raise
        return VmProcess(BACKEND, popen.pid, proc_stat.start_time, str(api_socket), extra)

    def _jailer(self) -> str | None:
        """The jailer to run Firecracker in, or None for none (``use_jailer = false``, or unset and not installed)."""
        if self.use_jailer is False:
            return None
        jailer = find_binary(self.ctx, "jailer_bin", "jailer")
        if jailer is None and self.use_jailer:
            raise FirecrackerLaunchError("use_jailer = true but jailer is not found: install it or set jailer_bin")
        return jailer

    def _launch_through_helper(self, spec: VmSpec, binary: str, jailer: str, progress: Progress) -> VmProcess:
        """An owner daemon's jailed launch: bangerd-root runs the jailer, the daemon does the rest as the owner.

        Raises:
            NotImplementedError: the host ops have no root side (nothing has been started then).
        """
        base = Path(str(self.ctx.config.get("jailer_chroot_base") or DEFAULT_CHROOT_BASE))
        firecracker = str(Path(binary).resolve())  # bangerd-root compares resolved paths
        directory = base / Path(firecracker).name / spec.vm_id
        root = directory / "root"
        api_socket = root / API_SOCKET_IN_JAIL.lstrip("/")
        extra = {
            "log": str(root / LOG_IN_JAIL.lstrip("/")),
            "serial_log": str(spec.serial_log),
            "api_socket": str(api_socket),
            "vsock_socket": str(root / VSOCK_IN_JAIL.lstrip("/")),
            # The owner may empty only root/ (its parents are root's and unlistable): that is what goes on stop.
            "jail_dir": str(root),
        }
        for key in ("api_socket", "vsock_socket"):
            if len(extra[key]) > MAX_SOCKET_PATH:
                raise FirecrackerLaunchError(
                    f"socket path {extra[key]} is longer than {MAX_SOCKET_PATH} bytes: use a shorter jailer_chroot_base"
                )
        fifo = spec.run_dir / CONSOLE_FIFO
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        try:
            # Held open before the request: bangerd-root opens the write end without waiting for a reader.
            reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                pid = self.ctx.host_ops.spawn_jailed_vmm(
                    str(Path(jailer).resolve()),
                    firecracker,
                    spec.vm_id,
                    self.ctx.owner_uid,
                    self.ctx.owner_gid,
                    str(base),
                    str(fifo),
                )
                proc_stat = read_proc_stat(pid)  # at once: its start time tells this process from a reused pid
                try:
                    # Only now: without a root helper the launch falls back to an unjailed one.
                    progress.step("starting Firecracker in the jailer (through bangerd-root)")
                    spec.serial_log.write_bytes(b"")
                    os.set_blocking(reader, True)
                    start_log_pump_from(reader, spec.serial_log)  # capped: the guest may print forever
                except BaseException:
                    # The jailed Firecracker runs already: a launch that fails must not leave it behind.
                    if proc_stat is not None:
                        _kill_jailed(pid, proc_stat.start_time)
                    self._cleanup_files(extra)
                    raise
            finally:
                os.close(reader)
        finally:
            fifo.unlink(missing_ok=True)
        progress.log(f"jailer pid {pid}, chroot {root}")
        if proc_stat is None or proc_stat.zombie:
            self._cleanup_files(extra)
            raise FirecrackerLaunchError(_failure(spec.name, "the jailer exited at once", extra))
        start_time = proc_stat.start_time

        def exited() -> str | None:
            return None if is_same_process(pid, start_time) else "the jailed Firecracker exited"

        def link_files() -> GuestFiles:
            # Now that the jailer has handed root/ to the owner: link the guest's files in as the owner.
            return populate_jail(spec, base, directory, self.ctx.owner_uid, self.ctx.owner_gid, progress).files

        try:
            self._configure(exited, api_socket, spec, link_files, extra, progress)
            if not is_same_process(pid, start_time):
                raise FirecrackerLaunchError(_failure(spec.name, "Firecracker exited right after InstanceStart", extra))
        except BaseException:
            _kill_jailed(pid, start_time)
            self._cleanup_files(extra)
            raise
        return VmProcess(BACKEND, pid, start_time, str(api_socket), extra)

    def _jailed_argv(self, spec: VmSpec, binary: str, jailer: str, progress: Progress) -> tuple[list[str], Jail]:
        uid = int(self.ctx.config.get("jailer_uid") or self.ctx.owner_uid)
        gid = int(self.ctx.config.get("jailer_gid") or self.ctx.owner_gid)
        jail = prepare_jail(spec, binary, uid, gid, progress)
        return jailer_argv(jailer, binary, spec.vm_id, uid, gid, jail), jail

    def _configure(
        self,
        exited: Callable[[], str | None],
        api_socket: Path,
        spec: VmSpec,
        guest_files: Callable[[], GuestFiles],
        extra: Mapping[str, str],
        progress: Progress,
    ) -> None:
        """Wait for the API, get the guest's file paths (a jail may be filled only now), configure, start."""
        with FirecrackerApi(api_socket) as api:
            deadline = time.monotonic() + API_READY_TIMEOUT
            while True:
                gone = exited()
                if gone is not None:
                    raise FirecrackerLaunchError(_failure(spec.name, gone, extra))
                try:
                    api.get("/")
                    break
                except FirecrackerApiError:
                    if time.monotonic() > deadline:
                        what = f"Firecracker's API socket did not answer within {API_READY_TIMEOUT:.0f} s"
                        raise FirecrackerLaunchError(_failure(spec.name, what, extra)) from None
                    time.sleep(0.02)
            progress.step("configuring Firecracker")
            files = guest_files()
            try:
                for path, body in [*configuration_calls(spec, files), ("/actions", {"action_type": "InstanceStart"})]:
                    status = api.put(path, body)
                    progress.log(f"PUT {path}: {status}")
                state = api.get("/").get("state")
            except FirecrackerApiError as exc:
                raise FirecrackerLaunchError(_failure(spec.name, str(exc), extra)) from None
            if state != "Running":
                raise FirecrackerLaunchError(_failure(spec.name, f"instance state is {state!r} after start", extra))

    # ------------------------------------------------------------------ inspecting

    def is_running(self, proc: VmProcess) -> bool:
        """Same process (pid + start time) and the API reports the instance ``Running``."""
        self._poll_children()
        if not is_same_process(proc.pid, proc.start_time):
            return False
        try:
            with FirecrackerApi(Path(proc.control_socket), timeout=2.0) as api:
                return bool(api.get("/").get("state") == "Running")
        except FirecrackerApiError:
            return False

    def log_tail(self, proc: VmProcess, lines: int = 20) -> str:
        """Tail of Firecracker's log and of the serial console."""
        return _format_tail(proc.extra, lines)

    # ------------------------------------------------------------------ stopping

    def stop(self, proc: VmProcess, timeout: float) -> None:
        """Ctrl+Alt+Del (the guest reboots, Firecracker exits), then SIGTERM/SIGKILL after ``timeout``."""
        if is_same_process(proc.pid, proc.start_time):
            try:
                with FirecrackerApi(Path(proc.control_socket), timeout=2.0) as api:
                    api.put("/actions", {"action_type": "SendCtrlAltDel"})
            except FirecrackerApiError as exc:
                self.ctx.logger.info("Firecracker pid %d: SendCtrlAltDel failed: %s", proc.pid, exc)
            if wait_gone(proc.pid, proc.start_time, timeout):
                self.ctx.logger.info("Firecracker pid %d: guest shut down", proc.pid)
            else:
                self.ctx.logger.warning(
                    "Firecracker pid %d: guest did not shut down within %.0f s; terminating Firecracker",
                    proc.pid,
                    timeout,
                )
                terminate(proc.pid, proc.start_time, TERM_GRACE)
        self._finish(proc)

    def kill(self, proc: VmProcess) -> None:
        """SIGKILL now (if it is still the same process), then remove its sockets and jail."""
        if signal_process(proc.pid, proc.start_time, signal.SIGKILL):
            wait_gone(proc.pid, proc.start_time, TERM_GRACE)
        self._finish(proc)

    def _finish(self, proc: VmProcess) -> None:
        self._poll_children()
        if not is_same_process(proc.pid, proc.start_time):
            self._cleanup_files(proc.extra)

    def _cleanup_files(self, extra: Mapping[str, str]) -> None:
        for key in ("api_socket", "vsock_socket"):
            if extra.get(key):
                remove_stale_socket(Path(extra[key]))
        if extra.get("jail_dir"):
            remove_jail(Path(extra["jail_dir"]))

    def _terminate_child(self, popen: subprocess.Popen[bytes]) -> None:
        if popen.poll() is None:
            popen.kill()
            popen.wait(TERM_GRACE)
        self._children.pop(popen.pid, None)

    def _poll_children(self) -> None:
        for pid, popen in list(self._children.items()):
            if popen.poll() is not None:
                del self._children[pid]


def _format_tail(extra: Mapping[str, str], lines: int = 20) -> str:
    return format_log_tails({"Firecracker log": extra.get("log"), "serial console": extra.get("serial_log")}, lines)


def _failure(name: str, what: str, extra: Mapping[str, str]) -> str:
    tail = _format_tail(extra)
    return f"VM {name} failed to start: {what}" + (f"\n{tail}" if tail else "")


def _kill_jailed(pid: int, start_time: int) -> None:
    """SIGKILL a jailed Firecracker of a failed launch, once it runs as the owner.

    Right after the spawn the process is still the jailer, root's, until it
    drops to the owner and execs Firecracker: signals are refused (EPERM) for
    that moment. One stuck as root past :data:`TERM_GRACE` is bangerd-root's to end.
    """
    deadline = time.monotonic() + TERM_GRACE
    while True:
        try:
            if signal_process(pid, start_time, signal.SIGKILL):
                wait_gone(pid, start_time, TERM_GRACE)
            return
        except PermissionError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)
