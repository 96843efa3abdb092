""":class:`AgentClient`: health, exec, put/get, sessions and set_identity against a guest's ``banger-agent``.

The protocol client alone (both the daemon and the CLI's `vm run` use it); the daemon's side of agent
tokens and of finding a VM's channel is in ``banger_core.daemon.agent.client``.

Everything the guest sends is hostile input: frames are bounded
(:data:`~banger_hookspecs.guest_agent.MAX_FRAME`), JSON answers are checked,
a ``get`` never writes more than the caller's ``max_bytes`` and never follows a
symlink on the host, and remote paths must be absolute and normalised. Each
call opens its own connection, authenticated with the VM's token; callers on
one VM are serialised through a lock file in its run dir (QEMU serves one
chardev client at a time).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import posixpath
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from banger_core.common.agent_identity import GuestIdentity
from banger_core.common.agent_transport import Transport
from banger_core.common.errors import AgentAuthError, AgentError, AgentUnavailable, InvalidRequest
from banger_hookspecs import guest_agent as wire
from banger_hookspecs.names import VM_NAME_RULE, is_vm_name

#: Stale bytes a previous aborted client may have left in the port; more than this is not a banger agent.
MAX_RESYNC_BYTES = 4 * wire.MAX_FRAME

OutputSink = Callable[[bytes], None]


class ByteSource(Protocol):
    """Where an exec's stdin comes from: a binary file, or anything whose ``read`` returns b"" at the end."""

    def read(self, size: int, /) -> bytes: ...


def validate_remote_path(path: str) -> str:
    """``path`` if it is an absolute, normalised guest path; else :class:`InvalidRequest`."""
    if not path.startswith("/") or "\0" in path or "//" in path or posixpath.normpath(path) != path:
        raise InvalidRequest(f"invalid guest path {path!r}: use an absolute path without '..', '//' or a trailing '/'")
    return path


class _Channel:
    """One authenticated connection: framed send/receive with bounds."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.send_lock = threading.Lock()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        with self.send_lock:
            self.sock.sendall(wire.frame(kind, payload))

    def send_json(self, kind: bytes, value: object) -> None:
        self.send(kind, json.dumps(value).encode())

    def _fill(self) -> None:
        data = self.sock.recv(wire.CHUNK)
        if not data:
            raise AgentError("the guest agent closed the connection mid-operation")
        self.buffer += data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def sync(self, token: str) -> None:
        """Send HELLO and skip everything before our own SYNC answer."""
        nonce = secrets.token_hex(wire.NONCE_LEN // 2)
        self.send_json(wire.HELLO, {"token": token, "nonce": nonce})
        marker = wire.HEADER.pack(wire.MAGIC, wire.SYNC, wire.NONCE_LEN + 1) + nonce.encode()
        while (start := self.buffer.find(marker)) < 0:
            if len(self.buffer) > MAX_RESYNC_BYTES:
                raise AgentError(f"no answer to HELLO in {MAX_RESYNC_BYTES} bytes: not a banger agent")
            self._fill()
        del self.buffer[: start + len(marker)]
        if self._take(1) != b"1":
            raise AgentAuthError("the guest agent refused this VM's token (was the VM's work disk replaced?)")

    def read_frame(self) -> tuple[bytes, bytes]:
        magic, kind, length = wire.HEADER.unpack(self._take(wire.HEADER.size))
        if magic != wire.MAGIC:
            raise AgentError(f"guest agent protocol error: bad frame magic {magic!r}")
        if length > wire.MAX_FRAME:
            raise AgentError(f"guest agent protocol error: frame of {length} bytes exceeds {wire.MAX_FRAME}")
        return kind, self._take(length)

    def read_answer(self, kind: bytes = wire.ANSWER) -> dict[str, object]:
        got, payload = self.read_frame()
        if got != kind:
            raise AgentError(f"guest agent protocol error: expected a {kind!r} frame, got {got!r}")
        try:
            answer = json.loads(payload)
        except ValueError:
            raise AgentError("guest agent protocol error: answer is not JSON") from None
        if not isinstance(answer, dict):
            raise AgentError("guest agent protocol error: answer is not a JSON object")
        return answer

    def read_ok(self, what: str) -> dict[str, object]:
        answer = self.read_answer()
        if answer.get("ok") is not True:
            error = answer.get("error")
            raise AgentError(f"{what} failed in the guest: {str(error)[:500] if error else 'no reason given'}")
        return answer


@dataclass(frozen=True)
class StreamChunk:
    """Output of one stream from ``start`` (absolute offset); ``end`` is where the guest's stream ends now."""

    start: int
    data: bytes
    end: int


@dataclass(frozen=True)
class SessionRead:
    running: bool
    status: int | None
    stdout: StreamChunk
    stderr: StreamChunk

    @classmethod
    def parse(cls, answer: dict[str, object]) -> SessionRead:
        chunks = []
        for stream in ("stdout", "stderr"):
            part = answer.get(stream)
            if not isinstance(part, dict):
                raise AgentError(f"guest agent protocol error: no {stream} in session read")
            start, end = _int_field(part, "start"), _int_field(part, "end")
            try:
                data = base64.b64decode(str(part.get("data")), validate=True)
            except ValueError:
                raise AgentError(f"guest agent protocol error: {stream} data is not base64") from None
            if not 0 <= start <= start + len(data) <= end:
                raise AgentError(f"guest agent protocol error: inconsistent {stream} offsets")
            chunks.append(StreamChunk(start, data, end))
        running = answer.get("running")
        status = answer.get("status")
        if not isinstance(running, bool) or not (status is None or (isinstance(status, int) and not running)):
            raise AgentError("guest agent protocol error: bad session state")
        return cls(running, status if isinstance(status, int) else None, chunks[0], chunks[1])


def _int_field(answer: dict[str, object], key: str) -> int:
    value = answer.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AgentError(f"guest agent protocol error: {key!r} is not an integer")
    return value


class AgentClient:
    """Talks to one VM's agent through ``transport``, authenticated by ``token``."""

    def __init__(self, transport: Transport, token: str, lock_path: Path | None = None) -> None:
        self.transport = transport
        self.token = token
        self.lock_path = lock_path

    @contextmanager
    def _session(self, timeout: float | None) -> Iterator[_Channel]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._locked(deadline):
            connect_timeout = 10.0 if deadline is None else max(0.1, deadline - time.monotonic())
            sock = self.transport.connect(connect_timeout)
            try:
                sock.settimeout(None if deadline is None else max(0.1, deadline - time.monotonic()))
                channel = _Channel(sock)
                try:
                    channel.sync(self.token)
                    yield channel
                except TimeoutError:
                    raise AgentError(f"the guest agent ({self.transport.describe()}) did not answer in time") from None
                except OSError as exc:
                    raise AgentError(f"guest agent connection failed: {exc}") from None
            finally:
                sock.close()

    @contextmanager
    def _locked(self, deadline: float | None) -> Iterator[None]:
        if self.lock_path is None:
            yield
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise AgentUnavailable("the guest agent is busy with another client; try again") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def _call(self, what: str, request: dict[str, object], timeout: float) -> dict[str, object]:
        """One request, one JSON answer."""
        with self._session(timeout) as channel:
            channel.send_json(wire.REQUEST, request)
            return channel.read_ok(what)

    def health(self, timeout: float) -> dict[str, object]:
        """The agent's status: protocol, pid, uptime_s, ready_ms, rss_kib, python."""
        return self._call("health", {"op": "health"}, timeout)

    def session_start(
        self,
        name: str,
        argv: list[str],
        *,
        cwd: str | None,
        stdin: bool,
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> int:
        """Start a session (a command that outlives this connection); returns its guest pid."""
        if cwd is not None:
            validate_remote_path(cwd)
        request: dict[str, object] = {
            "op": "session_start",
            "name": name,
            "argv": argv,
            "cwd": cwd,
            "stdin": stdin,
            "env": env or {},
        }
        return _int_field(self._call(f"session start {name}", request, timeout), "pid")

    def session_read(self, name: str, offsets: dict[str, int], timeout: float) -> SessionRead:
        """Output since ``offsets`` (per stream) and whether the session still runs."""
        answer = self._call(f"session read {name}", {"op": "session_read", "name": name, "offsets": offsets}, timeout)
        return SessionRead.parse(answer)

    def session_write(self, name: str, data: bytes, *, close: bool = False, timeout: float) -> None:
        """Send ``data`` to the session's stdin (then close it when ``close``)."""
        request = {"op": "session_write", "name": name, "data": base64.b64encode(data).decode(), "close": close}
        self._call(f"session input {name}", request, timeout)

    def session_signal(self, name: str, signum: int, timeout: float) -> None:
        self._call(f"session signal {name}", {"op": "session_signal", "name": name, "signal": signum}, timeout)

    def session_forget(self, name: str, timeout: float) -> None:
        """Drop an exited session (and its output) from the agent's memory."""
        self._call(f"session forget {name}", {"op": "session_forget", "name": name}, timeout)

    def session_list(self, timeout: float) -> list[dict[str, object]]:
        sessions = self._call("session list", {"op": "session_list"}, timeout).get("sessions")
        if not isinstance(sessions, list) or not all(isinstance(item, dict) for item in sessions):
            raise AgentError("guest agent protocol error: session list is not a list of objects")
        return sessions

    def set_identity(
        self,
        identity: GuestIdentity,
        timeout: float,
        *,
        entropy: bytes = b"",
        clock: float | None = None,
        wait_sshd: bool = True,
        new_token: str | None = None,
    ) -> None:
        """Install hostname, machine-id, ssh host key (sshd reloaded if running) and network settings.

        ``entropy`` is mixed into the guest's RNG and ``clock`` (Unix time) sets its wall clock, both
        before the key is installed: what a guest restored from a saved state needs, in the same call.
        Not ``wait_sshd``: the answer comes once sshd's reload is asked for, before it listens again.
        ``new_token``: the guest's agent token from then on (see :func:`token_rotation`), in the same call.
        """
        if new_token is not None:
            _check_token(new_token)
        if not is_vm_name(identity.hostname):
            raise InvalidRequest(f"invalid hostname {identity.hostname!r}: {VM_NAME_RULE}")
        if len(identity.machine_id) != 32 or set(identity.machine_id) - set("0123456789abcdef"):
            raise InvalidRequest(f"invalid machine-id {identity.machine_id!r}: use 32 lowercase hex digits")
        request: dict[str, object] = {
            "op": "identity",
            "hostname": identity.hostname,
            "machine_id": identity.machine_id,
            "ssh_host_key": base64.b64encode(identity.ssh_host_key).decode(),
            "ssh_host_key_public": identity.ssh_host_key_public,
            "entropy": base64.b64encode(entropy).decode(),
            "clock": clock,
            "address": identity.address,
            "gateway": identity.gateway,
            "dns": list(identity.dns),
            "wait_sshd": wait_sshd,
        }
        if new_token is not None:
            request["token"] = new_token
        self._call("set identity", request, timeout)

    def rotate_token(self, token: str, timeout: float) -> None:
        """Make ``token`` the guest's only accepted token (the caller keeps it as the VM's token)."""
        _check_token(token)
        self._call("token rotation", {"op": "rotate_token", "token": token}, timeout)

    def exec(
        self,
        argv: list[str],
        *,
        stdout: OutputSink,
        stderr: OutputSink,
        stdin: ByteSource | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        env_exact: bool = False,
        rlimits: dict[str, list[int]] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Run ``argv`` in the guest, streaming its output to ``stdout``/``stderr`` as it comes.

        ``env`` is added to the agent's base environment (root's HOME, a system PATH), or with
        ``env_exact`` is the command's whole environment. ``rlimits`` (``RLIMIT_*`` -> [soft, hard],
        -1 unlimited) are set for the command instead of the agent's own.

        Returns:
            The exit status; ``-N`` when killed by signal N.
        """
        if not argv:
            raise InvalidRequest("nothing to run: give a command")
        if cwd is not None:
            validate_remote_path(cwd)
        request = {
            "op": "exec",
            "argv": argv,
            "cwd": cwd,
            "env": env or {},
            "env_exact": env_exact,
            "rlimits": rlimits or {},
            "stdin": stdin is not None,
        }
        with self._session(timeout) as channel:
            channel.send_json(wire.REQUEST, request)
            channel.read_ok(f"exec {argv[0]}")
            feeder = None
            if stdin is not None:
                feeder = threading.Thread(target=_feed_stdin, args=(channel, stdin), daemon=True)
                feeder.start()
            while True:
                kind, payload = channel.read_frame()
                if kind == wire.STDOUT:
                    stdout(payload)
                elif kind == wire.STDERR:
                    stderr(payload)
                elif kind == wire.EXIT:
                    try:
                        result = json.loads(payload)
                    except ValueError:
                        raise AgentError("guest agent protocol error: exit frame is not JSON") from None
                    if not isinstance(result, dict):
                        raise AgentError("guest agent protocol error: exit frame is not a JSON object")
                    return _int_field(result, "status")
                else:
                    raise AgentError(f"guest agent protocol error: unexpected {kind!r} frame during exec")

    def put(self, data: bytes | BinaryIO, remote: str, mode: int = 0o644, timeout: float | None = None) -> int:
        """Write ``data`` to ``remote`` in the guest (atomically replaced); returns the bytes written."""
        validate_remote_path(remote)
        if not 0 <= mode <= 0o7777:
            raise InvalidRequest(f"invalid file mode {mode:o}")
        with self._session(timeout) as channel:
            channel.send_json(wire.REQUEST, {"op": "put", "path": remote, "mode": mode})
            channel.read_ok(f"put {remote}")
            reader: BinaryIO | None = None if isinstance(data, bytes) else data
            offset = 0
            while True:
                if reader is None:
                    assert isinstance(data, bytes)
                    chunk = data[offset : offset + wire.CHUNK]
                    offset += len(chunk)
                else:
                    chunk = reader.read(wire.CHUNK)
                if not chunk:
                    break
                channel.send(wire.DATA, chunk)
            channel.send(wire.END)
            return _int_field(channel.read_ok(f"put {remote}"), "size")

    def get(self, remote: str, local: Path, max_bytes: int, timeout: float | None = None) -> int:
        """Copy guest file ``remote`` to host file ``local`` (must not exist), at most ``max_bytes``.

        Returns:
            The size written. Nothing is left at ``local`` on failure.
        """
        validate_remote_path(remote)
        try:
            # O_EXCL|O_NOFOLLOW: the host path is created fresh, never through a planted symlink.
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise InvalidRequest(f"{local} already exists: remove it or pick another destination") from None
        except OSError as exc:
            raise InvalidRequest(f"cannot create {local}: {exc.strerror}") from None
        written = 0
        try:
            with os.fdopen(fd, "wb") as fh, self._session(timeout) as channel:
                channel.send_json(wire.REQUEST, {"op": "get", "path": remote})
                answer = channel.read_ok(f"get {remote}")
                size = _int_field(answer, "size")
                if not 0 <= size <= max_bytes:
                    raise AgentError(f"{remote} is {size} bytes in the guest, over the {max_bytes}-byte limit")
                while True:
                    kind, payload = channel.read_frame()
                    if kind == wire.END:
                        break
                    if kind != wire.DATA:
                        raise AgentError(f"guest agent protocol error: unexpected {kind!r} frame during get")
                    written += len(payload)
                    if written > size:
                        raise AgentError(f"{remote}: the guest sent more than the {size} bytes it announced")
                    fh.write(payload)
                if written != size:
                    raise AgentError(f"{remote}: the guest sent {written} of the {size} bytes it announced")
        except BaseException:
            local.unlink(missing_ok=True)
            raise
        return written


def _check_token(token: str) -> None:
    if len(token) != 64 or set(token) - set("0123456789abcdef"):
        raise InvalidRequest("invalid agent token: use 64 lowercase hex digits")


def _feed_stdin(channel: _Channel, stdin: ByteSource | bytes) -> None:
    try:
        if isinstance(stdin, bytes):
            for offset in range(0, len(stdin), wire.CHUNK):
                channel.send(wire.STDIN, stdin[offset : offset + wire.CHUNK])
        else:
            while chunk := stdin.read(wire.CHUNK):
                channel.send(wire.STDIN, chunk)
        channel.send(wire.STDIN_CLOSE)
    except OSError:
        pass  # the exec ended (connection closed) before its input did
