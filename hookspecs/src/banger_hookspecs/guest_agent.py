#!/usr/bin/env python3
"""banger-agent: the guest side of banger's host channel (standard library only, Python >= 3.7).

banger's initramfs copies this file to ``/run/banger/agent`` and starts it with
the image's ``python3`` just before ``switch_root``, so it runs before the
image's init (and sshd) in every image kind. It never opens a network socket:
it serves the virtio-serial port named :data:`PORT_NAME` (QEMU) and vsock port
:data:`VSOCK_PORT` (Firecracker, QEMU with vhost-vsock), which only the host's
VMM can reach.

Wire format: frames of ``MAGIC | type (1 byte) | length (u32 BE) | payload``,
at most :data:`MAX_FRAME` payload bytes. A connection starts with ``HELLO``
(JSON ``{"token", "nonce"}``); the agent answers ``SYNC`` with the nonce and
``b"1"`` (token matches ``/root/.banger/agent-token`` on the VM's work disk) or
``b"0"``. The unique nonce lets the host skip bytes a previous, aborted client
left in a virtio-serial port. Then exactly one ``REQUEST`` (JSON ``{"op": ...}``) per
HELLO, answered by ``ANSWER`` (JSON ``{"ok": bool, ...}``) and, per op, data
frames (see :func:`Agent.serve_request`).
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

PROTOCOL = 1
MAGIC = b"BGA1"
HEADER = struct.Struct(">4scI")
MAX_FRAME = 1 << 20
CHUNK = 64 << 10
PORT_NAME = "org.banger.agent.0"
VSOCK_PORT = 1024
TOKEN_PATH = "/root/.banger/agent-token"  # noqa: S105 (a file name)
NONCE_LEN = 32

HELLO = b"H"
SYNC = b"S"
REQUEST = b"Q"
ANSWER = b"A"
STDOUT = b"O"
STDERR = b"E"
STDIN = b"I"
STDIN_CLOSE = b"C"
KILL = b"K"
EXIT = b"X"
DATA = b"D"
END = b"Z"

#: Output a session keeps per stream in the agent's memory; the host pumps it out well before.
SESSION_RING = 1 << 20
#: Most bytes one ``session_read`` answer carries per stream (base64 keeps it under MAX_FRAME).
SESSION_READ_MAX = 256 << 10
MAX_SESSIONS = 64
#: The host checks names against banger's rule (banger_hookspecs.names) before sending; this
#: standalone program only refuses what could never be one (it cannot import banger in the guest).
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_MACHINE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_TOKEN_RE = re.compile(r"^[0-9a-f]{64}$")
SSHD_PID_FILES = ("/run/sshd.pid", "/var/run/sshd.pid")
#: Seconds between checks for a host on the virtio-serial port: idle, and for a while after a host left.
IDLE_POLL = 0.05
BRISK_POLL = 0.005
BRISK_POLL_WINDOW = 3.0
#: Seconds a reloaded sshd gets to listen again (its re-exec is a Python-free fork+exec: well under this).
SSHD_RELOAD_TIMEOUT = 10.0
_STARTED = time.monotonic()
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _spawn(argv: list[str], request: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start ``argv`` as an exec or a session asks: root's HOME and a system PATH, plus the request's env and cwd.

    With ``env_exact`` the request's env is the whole environment (nothing of the agent's own, which
    systemd or the initramfs gave it): what ``vm run`` sends to reproduce an ssh login's environment.
    """
    environ = {} if request.get("env_exact") else dict(os.environ, HOME="/root", PATH=SYSTEM_PATH)
    env = request.get("env")
    if isinstance(env, dict):
        environ.update({str(k): str(v) for k, v in env.items()})
    limits = _rlimits(request.get("rlimits"))
    return subprocess.Popen(
        argv,
        cwd=request.get("cwd") or "/root",
        env=environ,
        stdin=subprocess.PIPE if request.get("stdin") else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # Only setrlimit calls between fork and exec (no locks, no allocation to speak of).
        preexec_fn=(lambda: _apply_rlimits(limits)) if limits else None,
    )


#: Linux limits Python's resource module has no name for (the generic Linux numbering).
_RLIMITS_NOT_IN_PYTHON = {"RLIMIT_LOCKS": 10}


def _rlimits(value: object) -> list[tuple[int, int, int]]:
    """``{"RLIMIT_NOFILE": [soft, hard], ...}`` (-1: unlimited) as ``(resource, soft, hard)``; ValueError if not."""
    if not value:
        return []
    if not isinstance(value, dict):
        raise ValueError("rlimits must be an object")
    limits = []
    for name, pair in value.items():
        number = getattr(resource, str(name), _RLIMITS_NOT_IN_PYTHON.get(str(name)))
        if not isinstance(number, int) or not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"bad rlimit {name!r}")
        soft, hard = (resource.RLIM_INFINITY if int(v) < 0 else int(v) for v in pair)
        limits.append((number, soft, hard))
    return limits


def _apply_rlimits(limits: list[tuple[int, int, int]]) -> None:
    for number, soft, hard in limits:
        resource.setrlimit(number, (soft, hard))


def _is_label(name: str) -> bool:
    return 0 < len(name) <= 63 and set(name) <= _LABEL_CHARS and name[0] != "-" and name[-1] != "-"


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One encoded frame."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(MAGIC, kind, len(payload)) + payload


class Disconnected(Exception):
    """The peer went away."""


class Conn:
    """A framed byte stream over a file descriptor (virtio-serial port or vsock socket)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        data = memoryview(frame(kind, payload))
        while data:
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            except OSError as exc:
                raise Disconnected(str(exc)) from None
            data = data[written:]

    def send_json(self, kind: bytes, value: object) -> None:
        self.send(kind, json.dumps(value).encode())

    def buffered_frame(self) -> tuple[bytes, bytes] | None:
        """A complete frame from the buffer, resynchronising on MAGIC past garbage."""
        while True:
            start = self.buffer.find(MAGIC)
            if start < 0:
                del self.buffer[: max(0, len(self.buffer) - len(MAGIC) + 1)]
                return None
            del self.buffer[:start]
            if len(self.buffer) < HEADER.size:
                return None
            _, kind, length = HEADER.unpack_from(self.buffer)
            if length > MAX_FRAME:
                del self.buffer[:1]  # not a real header: look for the next MAGIC
                continue
            if len(self.buffer) < HEADER.size + length:
                return None
            payload = bytes(self.buffer[HEADER.size : HEADER.size + length])
            del self.buffer[: HEADER.size + length]
            return kind, payload

    def fill(self) -> None:
        """Read what is available (blocking until something is); raises Disconnected at EOF."""
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            raise Disconnected(str(exc)) from None
        if not data:
            raise Disconnected("end of stream")
        self.buffer += data

    def read_frame(self) -> tuple[bytes, bytes]:
        while True:
            got = self.buffered_frame()
            if got is not None:
                return got
            try:
                select.select([self.fd], [], [])
            except (OSError, ValueError) as exc:  # the descriptor went away under us
                raise Disconnected(str(exc)) from None
            self.fill()


def _json(payload: bytes) -> dict[str, Any]:
    value = json.loads(payload.decode())
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _write_file(path: str, data: bytes, mode: int, *, sync: bool = True) -> None:
    """Replace ``path`` atomically; ``sync`` false leaves the flush to the caller (one ``os.sync`` for many)."""
    tmp = f"{path}.banger-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _process_age_ms() -> float:
    """Milliseconds since this process was exec'd (its start time in /proc is in clock ticks since boot)."""
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return (time.clock_gettime(time.CLOCK_BOOTTIME) - started) * 1000


def _run(argv: list[str]) -> None:
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)


class Ring:
    """The last :data:`SESSION_RING` bytes of one output stream, addressed by absolute offset."""

    def __init__(self, size: int = SESSION_RING) -> None:
        self.size = size
        self.data = bytearray()
        self.end = 0  # absolute offset just past the newest byte

    @property
    def start(self) -> int:
        return self.end - len(self.data)

    def append(self, chunk: bytes) -> None:
        self.data += chunk
        self.end += len(chunk)
        if len(self.data) > self.size:
            del self.data[: len(self.data) - self.size]

    def read(self, offset: int, limit: int) -> tuple[int, bytes]:
        """``(start, data)`` from ``offset`` (or the oldest byte still kept, when it is gone)."""
        start = min(max(offset, self.start), self.end)
        return start, bytes(self.data[start - self.start : start - self.start + limit])


class Session:
    """A named command that outlives the connection that started it; its output kept in rings."""

    def __init__(self, name: str, argv: list[str], child: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.argv = argv
        self.child = child
        self.lock = threading.Lock()
        self.rings = {"stdout": Ring(), "stderr": Ring()}
        self.status: int | None = None
        self.readers = [
            threading.Thread(target=self._pump, args=(pipe, stream), daemon=True)
            for pipe, stream in ((child.stdout, "stdout"), (child.stderr, "stderr"))
        ]
        for reader in self.readers:
            reader.start()
        threading.Thread(target=self._reap, daemon=True).start()

    def _pump(self, pipe: Any, stream: str) -> None:
        while True:
            chunk = os.read(pipe.fileno(), CHUNK)
            if not chunk:
                pipe.close()
                return
            with self.lock:
                self.rings[stream].append(chunk)

    def _reap(self) -> None:
        status = self.child.wait()
        for reader in self.readers:
            reader.join()  # all output is in the rings before the exit shows
        with self.lock:
            self.status = status

    def view(self) -> dict[str, Any]:
        with self.lock:
            return {
                "name": self.name,
                "argv": self.argv,
                "pid": self.child.pid,
                "running": self.status is None,
                "status": self.status,
            }


class _StdinFeed:
    """An exec's stdin: a non-blocking pipe fed from a bounded backlog."""

    LIMIT = 1 << 20

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.fd = child.stdin.fileno() if child.stdin is not None else -1
        self.pipe = child.stdin
        self.backlog = bytearray()
        self.closing = False
        if self.fd >= 0:
            os.set_blocking(self.fd, False)

    def add(self, data: bytes) -> None:
        if self.fd >= 0 and not self.closing:
            self.backlog += data

    def full(self) -> bool:
        return len(self.backlog) >= self.LIMIT

    def waiting(self) -> list[int]:
        return [self.fd] if self.fd >= 0 and self.backlog else []

    def write(self) -> None:
        try:
            written = os.write(self.fd, self.backlog[:CHUNK])
        except BlockingIOError:
            return
        except BrokenPipeError:
            self.close()  # the command stopped reading: drop the rest
            return
        del self.backlog[:written]
        if self.closing and not self.backlog:
            self.close()

    def close_when_done(self) -> None:
        self.closing = True
        if not self.backlog:
            self.close()

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
        self.pipe, self.fd = None, -1
        self.backlog.clear()


class Agent:
    """Serves connections; each one authenticates with the VM's token first."""

    def __init__(self, token_path: str = TOKEN_PATH) -> None:
        self.token_path = token_path
        self.ready_ms = 0.0
        self.sessions: dict[str, Session] = {}
        self.sessions_lock = threading.Lock()

    def token_matches(self, offered: str) -> bool:
        try:
            with open(self.token_path, "rb") as fh:
                expected = fh.read().strip()
        except OSError:
            return False  # no token on the work disk: nobody gets in
        return bool(expected) and hmac.compare_digest(expected, offered.encode())

    def serve(self, conn: Conn) -> None:
        """Serve one connection until the peer disconnects."""
        authenticated = False
        while True:
            kind, payload = conn.read_frame()
            if kind == HELLO:
                try:
                    hello = _json(payload)
                    nonce = str(hello["nonce"]).encode()
                    offered = str(hello["token"])
                except (ValueError, KeyError):
                    continue
                if len(nonce) != NONCE_LEN:
                    continue
                authenticated = self.token_matches(offered)
                conn.send(SYNC, nonce + (b"1" if authenticated else b"0"))
            elif kind == REQUEST:
                if not authenticated:
                    conn.send_json(ANSWER, {"ok": False, "error": "not authenticated"})
                    continue
                try:
                    request = _json(payload)
                except ValueError as exc:
                    conn.send_json(ANSWER, {"ok": False, "error": f"bad request: {exc}"})
                    continue
                self.serve_request(conn, request)
                # One request per HELLO: a virtio-serial port cannot always tell that its host-side
                # client changed, so a later client never rides on an earlier one's token.
                authenticated = False
            # Other frames outside a request (late stdin after an exit, ...) are dropped.

    def serve_request(self, conn: Conn, request: dict[str, Any]) -> None:
        op = request.get("op")
        try:
            if op == "health":
                conn.send_json(
                    ANSWER,
                    {
                        "ok": True,
                        "protocol": PROTOCOL,
                        "pid": os.getpid(),
                        "uptime_s": round(time.monotonic() - _STARTED, 3),
                        "ready_ms": round(self.ready_ms, 1),
                        "rss_kib": _rss_kib(),
                        "python": sys.version.split()[0],
                    },
                )
            elif op == "exec":
                self.exec(conn, request)
            elif op == "put":
                self.put(conn, request)
            elif op == "get":
                self.get(conn, request)
            elif op == "session_start":
                conn.send_json(ANSWER, {"ok": True, **self.session_start(request)})
            elif op == "session_read":
                conn.send_json(ANSWER, {"ok": True, **self.session_read(request)})
            elif op == "session_write":
                self.session_write(request)
                conn.send_json(ANSWER, {"ok": True})
            elif op == "session_signal":
                session = self._session(request)
                if session.view()["running"]:
                    Agent._kill(session.child, int(request.get("signal", signal.SIGTERM)))
                conn.send_json(ANSWER, {"ok": True})
            elif op == "session_list":
                with self.sessions_lock:
                    views = [session.view() for session in self.sessions.values()]
                conn.send_json(ANSWER, {"ok": True, "sessions": views})
            elif op == "session_forget":
                session = self._session(request)
                if session.view()["running"]:
                    raise ValueError(f"session {session.name!r} is still running: stop it first")
                with self.sessions_lock:
                    del self.sessions[session.name]
                conn.send_json(ANSWER, {"ok": True})
            elif op == "identity":
                self.identity(request)
                conn.send_json(ANSWER, {"ok": True})
            elif op == "rotate_token":
                self.rotate_token(str(request.get("token")))
                conn.send_json(ANSWER, {"ok": True})
            else:
                conn.send_json(ANSWER, {"ok": False, "error": f"unknown op {op!r}"})
        except Disconnected:
            raise
        except Exception as exc:  # the host gets every failure as one line
            conn.send_json(ANSWER, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def exec(self, conn: Conn, request: dict[str, Any]) -> None:
        argv = [str(arg) for arg in request["argv"]]
        try:
            child = _spawn(argv, request)
        except OSError as exc:
            conn.send_json(ANSWER, {"ok": False, "error": f"cannot run {argv[0] if argv else '(empty argv)'}: {exc}"})
            return
        conn.send_json(ANSWER, {"ok": True, "pid": child.pid})
        assert child.stdout is not None and child.stderr is not None
        outputs = {child.stdout.fileno(): STDOUT, child.stderr.fileno(): STDERR}
        feed = _StdinFeed(child)
        try:
            while outputs:
                got = conn.buffered_frame()
                if got is not None:
                    self._exec_input(child, feed, *got)
                    continue
                # Input is written only as the command takes it, and no more host input is read
                # while a backlog waits: a command that is not reading never blocks its output.
                watch = [*outputs] if feed.full() else [conn.fd, *outputs]
                readable, writable, _ = select.select(watch, feed.waiting(), [])
                if writable:
                    feed.write()
                for fd in readable:
                    if fd == conn.fd:
                        conn.fill()
                        continue
                    data = os.read(fd, CHUNK)
                    if data:
                        conn.send(outputs[fd], data)
                    else:
                        del outputs[fd]
        except Disconnected:
            # The host went away mid-exec: the command must not outlive its caller.
            self._kill(child, signal.SIGKILL)
            child.wait()
            raise
        finally:
            feed.close()
            for pipe in (child.stdout, child.stderr):
                pipe.close()
        conn.send_json(EXIT, {"status": child.wait()})

    def _session(self, request: dict[str, Any]) -> Session:
        name = str(request.get("name"))
        with self.sessions_lock:
            session = self.sessions.get(name)
        if session is None:
            raise KeyError(f"no session {name!r}")
        return session

    def session_start(self, request: dict[str, Any]) -> dict[str, Any]:
        name = str(request["name"])
        if not _is_label(name):
            raise ValueError(f"session name {name!r} must be a DNS label (a-z, 0-9, '-')")
        argv = [str(arg) for arg in request["argv"]]
        if not argv:
            raise ValueError("nothing to run")
        with self.sessions_lock:
            old = self.sessions.get(name)
            if old is not None and old.view()["running"]:
                raise ValueError(f"session {name!r} is already running")
            if old is None and len(self.sessions) >= MAX_SESSIONS:
                raise ValueError(f"{MAX_SESSIONS} sessions already exist: stop some first")
            try:
                child = _spawn(argv, request)
            except OSError as exc:
                raise ValueError(f"cannot run {argv[0]}: {exc}") from None
            self.sessions[name] = Session(name, argv, child)
        return {"pid": child.pid}

    def session_read(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self._session(request)
        offsets = request.get("offsets") or {}
        answer: dict[str, Any] = session.view()  # state first: output read after it is complete when exited
        with session.lock:
            for stream, ring in session.rings.items():
                start, data = ring.read(int(offsets.get(stream, 0)), SESSION_READ_MAX)
                answer[stream] = {"start": start, "data": base64.b64encode(data).decode(), "end": ring.end}
        return answer

    def session_write(self, request: dict[str, Any]) -> None:
        session = self._session(request)
        stdin = session.child.stdin
        if stdin is None or stdin.closed:
            raise ValueError(f"session {session.name!r} takes no input (started with --stdin-mode none, or closed)")
        try:
            if request.get("data"):
                stdin.write(base64.b64decode(str(request["data"]), validate=True))
                stdin.flush()
            if request.get("close"):
                stdin.close()
        except BrokenPipeError:
            stdin.close()
            raise ValueError(f"session {session.name!r} no longer reads its input") from None

    def _exec_input(self, child: subprocess.Popen[bytes], feed: _StdinFeed, kind: bytes, payload: bytes) -> None:
        if kind == STDIN:
            feed.add(payload)
        elif kind == STDIN_CLOSE:
            feed.close_when_done()
        elif kind == KILL:
            self._kill(child, int(_json(payload).get("signal", signal.SIGTERM)))

    @staticmethod
    def _kill(child: subprocess.Popen[bytes], signum: int) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    def put(self, conn: Conn, request: dict[str, Any]) -> None:
        path = str(request["path"])
        mode = int(request.get("mode", 0o644)) & 0o7777
        tmp = f"{path}.banger-tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            conn.send_json(ANSWER, {"ok": False, "error": f"cannot write {path}: {exc}"})
            return
        conn.send_json(ANSWER, {"ok": True})
        size, error = 0, None
        try:
            while True:
                kind, payload = conn.read_frame()
                if kind == END:
                    break
                if kind == DATA and error is None:
                    try:
                        os.write(fd, payload)
                        size += len(payload)
                    except OSError as exc:
                        error = f"cannot write {path}: {exc}"
            if error is None:
                os.fchmod(fd, mode)
                os.fsync(fd)
        finally:
            os.close(fd)
            if error is not None:
                os.unlink(tmp)
        if error is None:
            os.replace(tmp, path)
            conn.send_json(ANSWER, {"ok": True, "size": size})
        else:
            conn.send_json(ANSWER, {"ok": False, "error": error})

    def get(self, conn: Conn, request: dict[str, Any]) -> None:
        path = str(request["path"])
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            conn.send_json(ANSWER, {"ok": False, "error": f"cannot read {path}: {exc}"})
            return
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if info.st_mode & 0o170000 != 0o100000:
                conn.send_json(ANSWER, {"ok": False, "error": f"{path} is not a regular file"})
                return
            conn.send_json(ANSWER, {"ok": True, "size": info.st_size, "mode": info.st_mode & 0o7777})
            while True:
                data = fh.read(CHUNK)
                if not data:
                    break
                conn.send(DATA, data)
        conn.send(END)

    def identity(self, request: dict[str, Any]) -> None:
        hostname = str(request["hostname"])
        machine_id = str(request["machine_id"])
        if not _is_label(hostname):
            raise ValueError(f"hostname {hostname!r} is not a DNS label")
        if not _MACHINE_ID_RE.match(machine_id):
            raise ValueError("machine_id must be 32 lowercase hex digits")
        token = request.get("token")
        if token is not None and not _TOKEN_RE.match(str(token)):
            raise ValueError("token must be 64 lowercase hex digits")
        key = base64.b64decode(str(request["ssh_host_key"]), validate=True)
        entropy = base64.b64decode(str(request.get("entropy") or ""), validate=True)
        clock = request.get("clock")
        if entropy:
            # A restored guest resumes with its template's RNG state: mix in the host's randomness first,
            # before anything (sshd's re-exec included) draws from it.
            with open("/dev/urandom", "wb") as fh:
                fh.write(entropy)
        if isinstance(clock, (int, float)) and not isinstance(clock, bool):
            # ... and with the template's wall clock: builds and TLS need the host's time.
            time.clock_settime(time.CLOCK_REALTIME, float(clock))
        os.makedirs("/etc/ssh", exist_ok=True)
        key_path = "/etc/ssh/ssh_host_ed25519_key"
        # No fsync per file (each is a disk flush, ~15-70 ms under TCG): one os.sync() at the end.
        _write_file(key_path, key, 0o600, sync=False)
        public_line = request.get("ssh_host_key_public")
        if isinstance(public_line, str) and public_line.startswith("ssh-ed25519 ") and "\n" not in public_line:
            # No ssh-keygen run: slow under TCG.
            _write_file(f"{key_path}.pub", f"{public_line}\n".encode(), 0o644, sync=False)
        else:
            try:
                public = subprocess.run(["ssh-keygen", "-y", "-f", key_path], capture_output=True, check=True).stdout
                _write_file(f"{key_path}.pub", public, 0o644, sync=False)
            except (OSError, subprocess.CalledProcessError):
                pass  # sshd needs only the private key
        _write_file("/etc/machine-id", f"{machine_id}\n".encode(), 0o444, sync=False)
        _write_file("/etc/hostname", f"{hostname}\n".encode(), 0o644, sync=False)
        socket.sethostname(hostname)
        address, gateway = request.get("address"), request.get("gateway")
        if address:
            _run(["ip", "addr", "flush", "dev", "eth0", "scope", "global"])
            _run(["ip", "addr", "add", str(address), "dev", "eth0"])
            _run(["ip", "link", "set", "eth0", "up"])
        if gateway:
            _run(["ip", "route", "replace", "default", "via", str(gateway), "dev", "eth0"])
        dns = request.get("dns") or []
        if dns:
            _write_file(
                "/etc/resolv.conf", "".join(f"nameserver {server}\n" for server in dns).encode(), 0o644, sync=False
            )
        if token is not None:
            # The VM's own agent token, in the same call (a restored guest starts with its template's).
            self.rotate_token(str(token), sync=False)
        # A running sshd keeps the old key in memory; an sshd not started yet reads the new one.
        # ``wait_sshd`` false: answer once the reload is asked for, not done (the host confirms over
        # ssh, with the new key pinned, before anyone's first login).
        if not _reload_sshd(wait=request.get("wait_sshd", True) is not False) and os.path.isdir("/run/systemd/system"):
            subprocess.run(
                ["systemctl", "try-restart", "ssh.service", "sshd.service"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        os.sync()  # every file above on disk before the answer (sshd's re-exec runs meanwhile)

    def rotate_token(self, token: str, *, sync: bool = True) -> None:
        """Replace this VM's token (atomically): every later connection must offer the new one.

        VMs restored from one template all start with the template's token; each gets its own
        right after the restore, over a connection that the old token already authenticated.
        """
        if not _TOKEN_RE.match(token):
            raise ValueError("token must be 64 lowercase hex digits")
        _write_file(self.token_path, token.encode(), 0o600, sync=sync)


def _sshd_listeners() -> set[str]:
    """Socket inodes of the guest's TCP sockets listening on port 22."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[1].endswith(":0016") and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _reload_sshd(wait: bool = True) -> bool:
    """SIGHUP the running sshd (it re-execs itself and reads the new host key); wait until it listens again.

    False when no sshd runs from a pid file (not started yet, or socket-activated: nothing to reload).
    Much cheaper than a unit restart under TCG, and the caller's first login cannot reach the old
    process: the answer waits until new listening sockets replace all the old ones (unless not ``wait``).
    """
    for pid_file in SSHD_PID_FILES:
        try:
            with open(pid_file) as fh:
                pid = int(fh.read().strip())
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().strip() != "sshd":
                    continue  # a stale pid file whose pid now belongs to another process
            before = _sshd_listeners()
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError):
            continue
        if not before or not wait:
            return True  # not listening on port 22 (banger never reaches it there): nothing to wait for
        deadline = time.monotonic() + SSHD_RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            now = _sshd_listeners()
            if now and not now & before:
                return True
            time.sleep(0.01)
        raise RuntimeError(f"sshd (pid {pid}) did not listen again within {SSHD_RELOAD_TIMEOUT:.0f} s of its reload")
    return False


def _log(message: str) -> None:
    try:
        with open("/dev/kmsg", "w") as fh:
            fh.write(f"<6>banger-agent: {message}\n")
    except OSError:
        pass


def _port_device(name: str = PORT_NAME) -> str | None:
    base = "/sys/class/virtio-ports"
    try:
        ports = os.listdir(base)
    except OSError:
        return None
    for port in ports:
        try:
            with open(f"{base}/{port}/name") as fh:
                if fh.read().strip() == name:
                    return f"/dev/{port}"
        except OSError:
            continue
    return None


def serve_virtio_port(agent: Agent) -> None:
    """Serve the virtio-serial port forever; each host (re)connection starts unauthenticated."""
    waited = 0
    # The port's driver may still be probing at early boot; a VMM without the port (vsock only)
    # leaves this thread waiting cheaply rather than exiting and being restarted.
    while True:
        device = _port_device()
        if device and os.path.exists(device):
            break
        waited += 1
        time.sleep(0.05 if waited < 600 else 5)
    fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    last_host = time.monotonic()
    while True:
        # With no host connected the port polls POLLHUP (and reads 0): wait for a host, briskly for a
        # while after the last one left (the next call often follows: a warm restore's identity call,
        # then `vm run`'s command; a template is saved right after its health check, so a restored
        # guest resumes inside that window), then at an idle guest's pace.
        events = poller.poll(1000)
        if not events or events[0][1] & select.POLLHUP:
            brisk = time.monotonic() - last_host < BRISK_POLL_WINDOW
            time.sleep(BRISK_POLL if brisk else IDLE_POLL)
            continue
        try:
            agent.serve(Conn(fd))
        except Disconnected:
            pass
        except Exception as exc:
            _log(f"virtio-serial connection failed: {exc}")
        last_host = time.monotonic()


def serve_vsock(agent: Agent) -> None:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        return
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((getattr(socket, "VMADDR_CID_ANY", 0xFFFFFFFF), VSOCK_PORT))
        listener.listen(4)
    except OSError:
        return  # no vsock device in this VM
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_socket, args=(agent, client), daemon=True).start()


def _serve_socket(agent: Agent, client: socket.socket) -> None:
    with client:
        try:
            agent.serve(Conn(client.fileno()))
        except Disconnected:
            pass
        except Exception as exc:
            _log(f"vsock connection failed: {exc}")


def _ignore_hangup(signum: int, frame: object) -> None:
    """SIGHUP to the agent itself: nothing to do (see :func:`main`)."""


def main() -> None:
    # Started from the initramfs, before the image's init: a console hang-up must not end it. A handler,
    # not SIG_IGN: an ignored signal stays ignored across exec, and the commands run here must get
    # SIGHUP's default action as they do under sshd.
    signal.signal(signal.SIGHUP, _ignore_hangup)
    agent = Agent()
    threads = [
        threading.Thread(target=target, args=(agent,), daemon=True) for target in (serve_virtio_port, serve_vsock)
    ]
    for thread in threads:
        thread.start()
    agent.ready_ms = _process_age_ms()
    _log(f"ready in {agent.ready_ms:.0f} ms")
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
