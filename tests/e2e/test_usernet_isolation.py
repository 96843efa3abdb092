"""usernet isolation: a guest reaches the host's 127.0.0.1 only when its VM was created with --host-access.

QEMU's user-mode NAT turns a guest connection to 10.0.2.2 (and to any other
address of its 10.0.2.0/24 subnet) into a connection to the host's 127.0.0.1.
A server on host loopback here counts every connection it accepts, so the
isolated case is proven on the host side too, not only by the guest's error.
Every probe targets a slirp alias: with isolation broken the traffic would land
on host loopback, never on another address.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.e2e import E2E

GREETING = b"host-loopback-service\n"


class LoopbackServer:
    """A TCP server on 127.0.0.1 that greets and counts each connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            self.accepted += 1
            with conn:
                conn.sendall(GREETING)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    try:
        yield server
    finally:
        server.close()


def probe(e2e: E2E, vm: str, address: str, port: int) -> str:
    """What the guest reads from ``address:port`` within 5 s ('' when it cannot connect)."""
    script = f"exec 3<>/dev/tcp/{address}/{port} && head -c {len(GREETING)} <&3"
    return e2e.ssh(vm, "timeout", "5", "bash", "-c", script).stdout


def test_guest_reaches_host_loopback_only_with_host_access(e2e: E2E, loopback_server: LoopbackServer) -> None:
    port = loopback_server.port
    e2e.banger("vm", "create", "--name", "isolated", check=True)
    try:
        assert e2e.vm("isolated")["host_access"] is False
        # 10.0.2.2 first: on an unisolated guest it lands on host loopback, never elsewhere.
        assert probe(e2e, "isolated", "10.0.2.2", port) == ""
        # Every other alias of the slirp subnet is the host's loopback too; reach one through the gateway.
        e2e.ssh("isolated", "ip", "route", "add", "10.0.2.77/32", "via", "10.0.2.2")
        assert probe(e2e, "isolated", "10.0.2.77", port) == ""
        assert probe(e2e, "isolated", "10.0.2.3", port) == ""
        assert loopback_server.accepted == 0
        # banger's own ssh forward still reaches the guest.
        assert e2e.ssh("isolated", "true").returncode == 0
    finally:
        e2e.banger("vm", "delete", "--force", "isolated", check=True)

    e2e.banger("vm", "create", "--name", "opened", "--host-access", check=True)
    try:
        assert e2e.vm("opened")["host_access"] is True
        assert probe(e2e, "opened", "10.0.2.2", port) == GREETING.decode()
        assert loopback_server.accepted == 1
    finally:
        e2e.banger("vm", "delete", "--force", "opened", check=True)
