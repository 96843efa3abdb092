"""The ``firecracker`` VMM driver: one Firecracker process per VM, configured through its API socket."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from banger_firecracker.api import FirecrackerApi, FirecrackerApiError
from banger_firecracker.jail import API_SOCKET_IN_JAIL, Jail, jailer_argv, prepare_jail, remove_jail
from banger_firecracker.payloads import GuestFiles, check_spec, configuration_calls
from banger_firecracker.probe import MIN_VERSION, TESTED_SERIES, binary_version, find_binary, show
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

BACKEND = "firecracker"
API_SOCKET = "fc.sock"
LOG = "firecracker.log"
VSOCK_SOCKET = "vsock.sock"
API_READY_TIMEOUT = 10.0
TERM_GRACE = 5.0
#: Above QEMU's best (hardware KVM): Firecracker boots faster and is banger's primary VMM.
PREFERENCE = 100


class FirecrackerLaunchError(Exception):
    """Firecracker refused the configuration or exited before the guest ran."""


class FirecrackerDriver(VmmDriver):
    """Runs each VM as ``firecracker --api-sock <run_dir>/fc.sock --id <vm id>``, optionally jailed."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.use_jailer = bool(ctx.config.get("use_jailer"))
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
        if self.use_jailer and find_binary(self.ctx, "jailer_bin", "jailer") is None:
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
        jail: Jail | None = None
        if self.use_jailer:
            argv, jail = self._jailed_argv(spec, binary, progress)
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
        try:
            self._configure(popen, api_socket, spec, files, extra, progress)
            proc_stat = read_proc_stat(popen.pid)
            if proc_stat is None or proc_stat.zombie:
                raise FirecrackerLaunchError(_failure(spec.name, "Firecracker exited right after InstanceStart", extra))
        except BaseException:
            self._terminate_child(popen)
            self._cleanup_files(extra)
            raise
        return VmProcess(BACKEND, popen.pid, proc_stat.start_time, str(api_socket), extra)

    def _jailed_argv(self, spec: VmSpec, binary: str, progress: Progress) -> tuple[list[str], Jail]:
        if os.geteuid() != 0:
            raise FirecrackerLaunchError(
                "use_jailer needs the daemon to run as root (the jailer chroots and creates device nodes): "
                "set use_jailer = false or run bangerd as root"
            )
        jailer = find_binary(self.ctx, "jailer_bin", "jailer")
        if jailer is None:
            raise FirecrackerLaunchError("use_jailer is set but jailer is not found: install it or set jailer_bin")
        uid = int(self.ctx.config.get("jailer_uid") or self.ctx.owner_uid)
        gid = int(self.ctx.config.get("jailer_gid") or self.ctx.owner_gid)
        jail = prepare_jail(spec, binary, uid, gid, progress)
        return jailer_argv(jailer, binary, spec.vm_id, uid, gid, jail), jail

    def _configure(
        self,
        popen: subprocess.Popen[bytes],
        api_socket: Path,
        spec: VmSpec,
        files: GuestFiles,
        extra: Mapping[str, str],
        progress: Progress,
    ) -> None:
        with FirecrackerApi(api_socket) as api:
            deadline = time.monotonic() + API_READY_TIMEOUT
            while True:
                code = popen.poll()
                if code is not None:
                    raise FirecrackerLaunchError(_failure(spec.name, f"Firecracker exited with status {code}", extra))
                try:
                    api.get("/")
                    break
                except FirecrackerApiError:
                    if time.monotonic() > deadline:
                        what = f"Firecracker's API socket did not answer within {API_READY_TIMEOUT:.0f} s"
                        raise FirecrackerLaunchError(_failure(spec.name, what, extra)) from None
                    time.sleep(0.02)
            progress.step("configuring Firecracker")
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
