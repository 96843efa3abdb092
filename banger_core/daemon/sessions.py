"""Long-lived sessions in a VM (``banger vm session ...``): named commands run by the guest agent.

The guest agent runs the command and keeps its newest output in memory
(:class:`banger_hookspecs.guest_agent.Ring`); the daemon pumps that output into
capped host files, so a session survives the CLI that started it, and a
restarted daemon adopts running sessions from their records (the guest never
noticed the daemon was gone). Per VM and session, under the VM's state dir::

    sessions/<name>/session.json   the record (state, exit status, stream offsets)
    sessions/<name>/stdout.log     output, capped at SESSION_LOG_MAX_BYTES (+ one rotated .1 file)
    sessions/<name>/stderr.log

``attach`` serves a Unix socket in the VM's run dir that bridges a client to the
session: it receives new output as it arrives and its bytes go to the session's
stdin; closing it (the CLI's detach key) leaves the session running.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from banger_core.common.agent_client import AgentClient
from banger_core.common.errors import AgentError, AgentUnavailable, Conflict, InvalidRequest, NotFound
from banger_core.daemon.layout import Layout
from banger_hookspecs.logpump import rotated
from banger_hookspecs.names import VM_NAME_RULE, is_vm_name

log = logging.getLogger("banger.sessions")

#: Cap of one session output file; with its rotated copy a stream takes at most twice this.
SESSION_LOG_MAX_BYTES = 4 << 20
#: How often the daemon drains a VM's running sessions.
PUMP_INTERVAL = 0.3
#: Agent call timeout for the pump and control calls.
AGENT_TIMEOUT = 30.0
#: Pump failures in a row after which a session whose VM is gone is marked lost.
MAX_PUMP_FAILURES = 20
STREAMS = ("stdout", "stderr")
SessionState = Literal["running", "exited", "lost"]
StdinMode = Literal["pipe", "none"]


def validate_session_name(name: str) -> str:
    if not is_vm_name(name):  # session names follow the VM naming rule
        raise InvalidRequest(f"invalid session name {name!r}: {VM_NAME_RULE}")
    return name


@dataclass
class SessionRecord:
    """A session as the daemon keeps it (``session.json``)."""

    name: str
    vm_id: str
    argv: list[str]
    cwd: str | None
    stdin_mode: StdinMode
    created_at: str
    state: SessionState = "running"
    status: int | None = None
    offsets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    #: Output the guest dropped before the daemon read it (its ring overflowed meanwhile).
    lost_bytes: int = 0

    @classmethod
    def load(cls, path: Path) -> SessionRecord:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(**data)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh)
        os.replace(tmp, path)


def append_capped(path: Path, data: bytes, max_bytes: int = SESSION_LOG_MAX_BYTES) -> None:
    """Append to ``path``; when it would pass ``max_bytes`` it becomes ``path.1`` and a new file starts."""
    while data:
        size = path.stat().st_size if path.exists() else 0
        if size >= max_bytes:
            os.replace(path, rotated(path))
            size = 0
        room = max_bytes - size
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data[:room])
        finally:
            os.close(fd)
        data = data[room:]


class SessionManager:
    """Starts, pumps, adopts, attaches and stops sessions; thread-safe."""

    def __init__(self, layout: Layout, client_for: Callable[[str], AgentClient]) -> None:
        self.layout = layout
        self.client_for = client_for
        self.lock = threading.RLock()
        self.pumps: dict[str, threading.Thread] = {}
        self.bridges: dict[tuple[str, str], socket.socket] = {}
        self.closing = threading.Event()

    # -- records -------------------------------------------------------------------------------------------

    def session_dir(self, vm_id: str, name: str) -> Path:
        return self.layout.vm_dir(vm_id) / "sessions" / validate_session_name(name)

    def get(self, vm_id: str, name: str) -> SessionRecord:
        path = self.session_dir(vm_id, name) / "session.json"
        try:
            return SessionRecord.load(path)
        except FileNotFoundError:
            raise NotFound(f"no session {name!r} in this VM: `banger vm session list VM` shows them") from None

    def records(self, vm_id: str) -> list[SessionRecord]:
        records = []
        for path in sorted((self.layout.vm_dir(vm_id) / "sessions").glob("*/session.json")):
            try:
                records.append(SessionRecord.load(path))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring %s: %s", path, exc)
        return records

    def log_path(self, vm_id: str, name: str, stream: str) -> Path:
        if stream not in STREAMS:
            raise InvalidRequest(f"invalid stream {stream!r}: use stdout or stderr")
        return self.session_dir(vm_id, name) / f"{stream}.log"

    # -- control -------------------------------------------------------------------------------------------

    def start(self, vm_id: str, name: str, argv: list[str], cwd: str | None, stdin_mode: StdinMode) -> SessionRecord:
        if not argv:
            raise InvalidRequest("nothing to run: give the session's command after `--`")
        if stdin_mode not in ("pipe", "none"):
            raise InvalidRequest(f"invalid stdin mode {stdin_mode!r}: use pipe or none")
        directory = self.session_dir(vm_id, name)
        with self.lock:
            if (directory / "session.json").exists():
                if self.get(vm_id, name).state == "running":
                    raise Conflict(f"session {name!r} is already running: stop it first or pick another name")
                for stream in STREAMS:  # a new run of an old name starts with fresh output
                    for path in (directory / f"{stream}.log", rotated(directory / f"{stream}.log")):
                        path.unlink(missing_ok=True)
            client = self.client_for(vm_id)
            client.session_start(name, argv, cwd=cwd, stdin=stdin_mode == "pipe", timeout=AGENT_TIMEOUT)
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            record = SessionRecord(name, vm_id, argv, cwd, stdin_mode, datetime.now(UTC).isoformat())
            record.save(directory / "session.json")
            self._ensure_pump(vm_id)
        return record

    def write(self, vm_id: str, name: str, data: bytes, close: bool = False) -> None:
        if self.get(vm_id, name).state != "running":
            raise Conflict(f"session {name!r} is not running")
        self.client_for(vm_id).session_write(name, data, close=close, timeout=AGENT_TIMEOUT)

    def stop(self, vm_id: str, name: str, grace: float = 10.0) -> SessionRecord:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the record once the session ended."""
        record = self.get(vm_id, name)
        if record.state != "running":
            return record
        client = self.client_for(vm_id)
        client.session_signal(name, 15, timeout=AGENT_TIMEOUT)
        deadline = time.monotonic() + grace
        killed = False
        while (record := self.get(vm_id, name)).state == "running":
            if not killed and time.monotonic() > deadline:
                client.session_signal(name, 9, timeout=AGENT_TIMEOUT)
                killed = True
            if time.monotonic() > deadline + grace:
                raise AgentError(f"session {name!r} did not end after SIGKILL")
            self._ensure_pump(vm_id)
            time.sleep(PUMP_INTERVAL)
        return record

    def adopt(self) -> None:
        """Resume pumping every running session (a daemon start): the guest kept them running."""
        for sessions in sorted(self.layout.vms.glob("*/sessions")):
            vm_id = sessions.parent.name
            if any(record.state == "running" for record in self.records(vm_id)):
                log.info("adopting the running sessions of VM %s", vm_id)
                self._ensure_pump(vm_id)

    def close(self) -> None:
        self.closing.set()
        with self.lock:
            for bridge in self.bridges.values():
                bridge.close()
            self.bridges.clear()

    # -- output pump ---------------------------------------------------------------------------------------

    def _ensure_pump(self, vm_id: str) -> None:
        with self.lock:
            pump = self.pumps.get(vm_id)
            if pump is not None and pump.is_alive():
                return
            pump = threading.Thread(target=self._pump_vm, args=(vm_id,), name=f"sessions-{vm_id}", daemon=True)
            self.pumps[vm_id] = pump
            pump.start()

    def _pump_vm(self, vm_id: str) -> None:
        failures = 0
        while not self.closing.is_set():
            running = [record for record in self.records(vm_id) if record.state == "running"]
            if not running:
                break
            try:
                client = self.client_for(vm_id)
                for record in running:
                    self._drain(client, record)
                failures = 0
            except (AgentUnavailable, AgentError) as exc:
                failures += 1
                if failures >= MAX_PUMP_FAILURES:
                    log.warning("VM %s: sessions lost (%s)", vm_id, exc)
                    for record in running:
                        record.state = "lost"
                        record.save(self.session_dir(vm_id, record.name) / "session.json")
                    break
            except Exception:
                log.exception("pumping the sessions of VM %s", vm_id)
            self.closing.wait(PUMP_INTERVAL)
        with self.lock:
            if self.pumps.get(vm_id) is threading.current_thread():
                del self.pumps[vm_id]

    def _drain(self, client: AgentClient, record: SessionRecord) -> None:
        """Copy the session's new output to its files; record the exit once everything is out."""
        directory = self.session_dir(record.vm_id, record.name)
        while True:
            read = client.session_read(record.name, record.offsets, timeout=AGENT_TIMEOUT)
            more = False
            for stream, chunk in (("stdout", read.stdout), ("stderr", read.stderr)):
                if chunk.start > record.offsets[stream]:
                    record.lost_bytes += chunk.start - record.offsets[stream]
                if chunk.data:
                    append_capped(directory / f"{stream}.log", chunk.data)
                record.offsets[stream] = chunk.start + len(chunk.data)
                more = more or record.offsets[stream] < chunk.end
            if not more and not read.running:
                record.state, record.status = "exited", read.status
            record.save(directory / "session.json")
            if not more:
                break
        if record.state == "exited":
            client.session_forget(record.name, timeout=AGENT_TIMEOUT)

    # -- attach ---------------------------------------------------------------------------------------------

    def attach_socket(self, vm_id: str, name: str) -> Path:
        """The Unix socket (0600, in the VM's 0700 run dir) that bridges a client to the session."""
        record = self.get(vm_id, name)
        if record.state != "running":
            raise Conflict(f"session {name!r} is {record.state}: nothing to attach to (see `banger vm session logs`)")
        path = self.layout.vm_run_dir(vm_id) / f"session-{name}.sock"
        with self.lock:
            if (vm_id, name) in self.bridges:
                return path
            path.unlink(missing_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o177)
            try:
                listener.bind(str(path))
            finally:
                os.umask(old_umask)
            listener.listen(4)
            self.bridges[(vm_id, name)] = listener
        threading.Thread(target=self._accept, args=(vm_id, name, listener, path), daemon=True).start()
        return path

    def _accept(self, vm_id: str, name: str, listener: socket.socket, path: Path) -> None:
        try:
            while True:
                client, _ = listener.accept()
                threading.Thread(target=self._bridge, args=(vm_id, name, client), daemon=True).start()
        except OSError:
            pass  # closed: the session ended or the daemon stops
        finally:
            path.unlink(missing_ok=True)

    def _bridge(self, vm_id: str, name: str, client: socket.socket) -> None:
        stop = threading.Event()

        def forward_input() -> None:
            try:
                while data := client.recv(4096):
                    self.write(vm_id, name, data)
            except (OSError, AgentError, AgentUnavailable, Conflict):
                pass
            stop.set()

        threading.Thread(target=forward_input, daemon=True).start()
        # New output only: what came before is in `session logs`.
        positions = {stream: self._size(self.log_path(vm_id, name, stream)) for stream in STREAMS}
        with client:
            try:
                while not stop.is_set():
                    sent = False
                    for stream in STREAMS:
                        path = self.log_path(vm_id, name, stream)
                        size = self._size(path)
                        if size < positions[stream]:
                            positions[stream] = 0  # rotated
                        if size > positions[stream]:
                            with open(path, "rb") as fh:
                                fh.seek(positions[stream])
                                data = fh.read(size - positions[stream])
                            positions[stream] += len(data)
                            client.sendall(data)
                            sent = True
                    if not sent:
                        if self.get(vm_id, name).state != "running":
                            return
                        stop.wait(PUMP_INTERVAL / 2)
            except OSError:
                pass

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0
