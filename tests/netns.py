"""Throw-away network namespaces for integration tests.

Every bridge, tap, route or packet to a non-loopback address that a test
makes must live in a namespace the test created and deletes again, also when
it fails. This module gives tests that namespace and three ways into it:

* :meth:`NetNamespace.run` / :meth:`NetNamespace.popen`: a program under
  ``ip netns exec`` (``dig``, ``nft``, ``ip``, a daemon);
* :meth:`NetNamespace.call`: a Python function run in a forked child that has
  entered the namespace; its return value (or exception) comes back pickled;
* :meth:`NetNamespace.socket`: a socket created and bound inside the
  namespace, handed back to the test process (a socket stays in the namespace
  it was created in), so a server can run in the test process yet listen
  inside the namespace.

Use it from a test module::

    from tests.netns import NetNamespace, temporary_netns

    @pytest.fixture
    def ns() -> Iterator[NetNamespace]:
        with temporary_netns() as namespace:
            yield namespace

    def test_bridge(ns):
        ns.run(["ip", "link", "add", "banger0", "type", "bridge"])
        assert "banger0" in ns.run(["ip", "-br", "link"]).stdout
"""

from __future__ import annotations

import ctypes
import os
import pickle
import secrets
import select
import signal
import socket
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "banger-test-"
_CLONE_NEWNET = 0x40000000


def require_root() -> None:
    """Skip the calling test unless it runs as root (creating a namespace needs CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces can only be created by root (run the integration tests as root)")


def _enter(name: str) -> None:
    """Move the calling (forked, single-threaded) process into namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetNamespace:
    """A network namespace this test process created (see :func:`temporary_netns`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._children: list[subprocess.Popen[Any]] = []

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace and capture its text output."""
        return subprocess.run(self.argv(argv), capture_output=True, text=True, check=check, timeout=timeout)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace; it is killed (by pid) when the namespace goes away."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(argv), **kwargs)
        self._children.append(proc)
        return proc

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 60, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a forked child inside the namespace and return its result.

        The result or the exception travels back pickled; an exception is
        re-raised here as the same type (with the child's traceback as its
        ``__notes__``). The child is killed if it runs longer than ``timeout``.
        """
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            os.close(read_fd)
            status = 0
            try:
                _enter(self.name)
                payload = pickle.dumps(("ok", fn(*args, **kwargs)))
            except BaseException as exc:
                status = 1
                try:
                    payload = pickle.dumps(("error", exc, traceback.format_exc()))
                except Exception:
                    payload = pickle.dumps(("error", RuntimeError(repr(exc)), traceback.format_exc()))
            with os.fdopen(write_fd, "wb") as out:
                out.write(payload)
            os._exit(status)
        os.close(write_fd)
        try:
            data = self._read_all(read_fd, timeout)
        finally:
            os.close(read_fd)
            if data is None:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if data is None:
            raise TimeoutError(f"{getattr(fn, '__name__', fn)} did not finish within {timeout} s in {self.name}")
        result = pickle.loads(data)  # our own child wrote it
        if result[0] == "ok":
            return result[1]  # type: ignore[no-any-return]
        exc, child_traceback = result[1], result[2]
        exc.add_note(f"raised in network namespace {self.name}:\n{child_traceback}")
        raise exc

    @staticmethod
    def _read_all(fd: int, timeout: float) -> bytes | None:
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def socket(self, kind: socket.SocketKind, address: tuple[str, int]) -> socket.socket:
        """An IPv4 socket of ``kind`` created inside the namespace and bound to ``address``."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with parent, child:
            pid = os.fork()
            if pid == 0:
                status = 0
                try:
                    _enter(self.name)
                    made = socket.socket(socket.AF_INET, kind)
                    made.bind(address)
                    socket.send_fds(child, [b"ok"], [made.fileno()])
                except BaseException as exc:
                    status = 1
                    with suppress(OSError):
                        child.send(f"error: {exc!r}".encode())
                os._exit(status)
            try:
                parent.settimeout(30)
                message, fds, _, _ = socket.recv_fds(parent, 1024, 1)
            finally:
                os.waitpid(pid, 0)
        if message != b"ok" or not fds:
            raise OSError(f"binding {address} in {self.name} failed: {message.decode(errors='replace')}")
        return socket.socket(fileno=fds[0])

    def kill_children(self) -> None:
        """Kill every process :meth:`popen` started, by pid, and reap it."""
        for proc in self._children:
            if proc.poll() is None:
                proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._children.clear()


@contextmanager
def temporary_netns() -> Iterator[NetNamespace]:
    """Create ``banger-test-<random>`` with loopback up; delete it afterwards, also on failure.

    Deleting the namespace destroys every bridge, tap, address, route and
    nftables table made inside it.
    """
    require_root()
    name = NAME_PREFIX + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    namespace = NetNamespace(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        yield namespace
    finally:
        namespace.kill_children()
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
