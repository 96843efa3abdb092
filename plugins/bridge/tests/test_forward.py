"""The bridge's port forwarder as a real process: TCP and UDP through it, a taken port, and attach/detach.

The "guest" here is a server on 127.0.0.1 (the network rule: no traffic to a
guest address outside a namespace; tests/e2e/test_bridge.py reaches a real
bridged guest inside one).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_bridge.network import BridgeError, BridgeNetwork, start_forwarder
from banger_core.testing import make_plugin_context
from banger_hookspecs import NicRequest, PortForward
from banger_hookspecs.process import is_same_process, terminate

pytestmark = pytest.mark.unit


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def tcp_echo() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers each connection with ``echo:`` + what it read, then closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"echo:" + conn.recv(1024))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(timeout=5)


@pytest.fixture
def udp_echo() -> Iterator[int]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():  # a UDP socket has no shutdown that wakes recvfrom: poll
            try:
                data, peer = server.recvfrom(1024)
            except TimeoutError:
                continue
            server.sendto(b"echo:" + data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_tcp_and_udp_go_through_the_forwarder_until_it_is_stopped(tcp_echo: int, udp_echo: int) -> None:
    tcp_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    published = (PortForward("127.0.0.1", tcp_port, tcp_echo), PortForward("127.0.0.1", udp_port, udp_echo, "udp"))
    pid, started = start_forwarder("127.0.0.1", published)
    try:
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as conn:
            conn.sendall(b"hello")
            conn.shutdown(socket.SHUT_WR)  # half-close travels through to the server
            assert conn.recv(1024) == b"echo:hello"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(10)
            client.sendto(b"ping", ("127.0.0.1", udp_port))
            assert client.recvfrom(1024)[0] == b"echo:ping"
            client.sendto(b"again", ("127.0.0.1", udp_port))  # the same client's session is reused
            assert client.recvfrom(1024)[0] == b"echo:again"
    finally:
        assert terminate(pid, started)
    with socket.socket() as sock:  # its ports are free again
        # SO_REUSEADDR: the relayed connection may sit in TIME_WAIT on that port; only a listener still
        # bound there (the forwarder alive) makes this bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", tcp_port))


def test_a_taken_port_fails_the_start_with_the_kernels_reason(tcp_echo: int) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        busy = holder.getsockname()[1]
        with pytest.raises(
            BridgeError, match=rf"^could not publish the VM's ports: host port {busy}/tcp on 127.0.0.1: "
        ):
            start_forwarder("127.0.0.1", (PortForward("127.0.0.1", busy, tcp_echo),))


class Links:
    """HostOps enough for attach/detach: taps in a set, every call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def list_links(self, prefix: str) -> list[str]:
        return []

    def create_tap(self, name: str, bridge: str, owner_uid: int) -> None:
        self.calls.append(("create_tap", name))

    def delete_tap(self, name: str) -> None:
        self.calls.append(("delete_tap", name))


def test_attach_starts_the_forwarder_and_detach_stops_it(banger_env: dict[str, str], tmp_path: Path) -> None:
    ops = Links()
    ctx = dataclasses.replace(make_plugin_context(banger_env, {}), host_ops=ops, owner_uid=4242)
    driver = BridgeNetwork(ctx, resolv_conf_files=[tmp_path / "none"])
    port = free_port()
    published = (PortForward("127.0.0.1", port, 80),)
    request = NicRequest(vm_id="0123456789abcdef", vm_name="web", mac="02:fc:00:00:00:07", guest_ip="172.16.0.7")

    attachment = driver.attach(dataclasses.replace(request, published=published))
    pid, started = int(attachment.state["forwarder_pid"]), int(attachment.state["forwarder_start"])
    try:
        assert is_same_process(pid, started)
        with socket.socket() as sock, pytest.raises(OSError):
            sock.bind(("127.0.0.1", port))  # the forwarder holds the published port
    finally:
        driver.detach(attachment)
    assert not is_same_process(pid, started)
    taps = [call for call in ops.calls if not call[1].startswith("bgrpool")]  # detach refills the spare pool
    assert taps == [("create_tap", "bgr0123456789ab"), ("delete_tap", "bgr0123456789ab")]

    # A port that cannot be published: attach fails and gives the tap back (the core detaches nothing).
    with socket.create_server(("127.0.0.1", 0)) as holder:
        taken = (PortForward("127.0.0.1", holder.getsockname()[1], 80),)
        with pytest.raises(BridgeError, match="could not publish the VM's ports"):
            driver.attach(dataclasses.replace(request, published=taken))
    taps = [call for call in ops.calls if not call[1].startswith("bgrpool")]
    assert taps[-2:] == [("create_tap", "bgr0123456789ab"), ("delete_tap", "bgr0123456789ab")]
