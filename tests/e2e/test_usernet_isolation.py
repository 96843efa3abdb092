"""usernet isolation: a guest has egress but reaches the host's 127.0.0.1 only when created with --host-access.

QEMU's user-mode NAT turns a guest connection to 10.0.2.2 (and to any other
address of its 10.0.2.0/24 subnet) into a connection to the host's 127.0.0.1,
so an isolated guest runs on passt with ``--no-map-gw`` instead: its
connections leave through ordinary host sockets and no guest address means
host loopback.

Everything runs in a network namespace this test creates: the daemon, a
server on the namespace's 127.0.0.1 that counts every connection it accepts
(so isolation is proven on the host side too, not only by the guest's error),
and an "outside" server on 198.18.0.1 (benchmark range), the namespace's only
non-loopback address behind its default route. A guest reaching that one
proves egress without a packet leaving the machine.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns import NetNamespace, temporary_netns
from tests.support.e2e import E2E, GOLDEN, make_env, pids_whose_cmdline

GREETING = b"host-side-service\n"
OUTSIDE = "198.18.0.1"


class CountingServer:
    """A TCP server on a socket made inside the namespace: greets and counts each connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.listen()
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
        # shutdown() wakes the blocked accept(); close() alone would not.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


@dataclass
class Lab:
    e2e: E2E
    loopback: CountingServer
    outside: CountingServer


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """The daemon in a fresh namespace with an 'outside' address, a default route, and both servers."""
    with temporary_netns() as ns:
        _give_outside_address(ns)
        env = make_env(tmp_path, "ssh_ready_timeout = 420\n")
        harness = E2E(env=env, root=tmp_path)
        loopback = CountingServer(ns.socket(socket.SOCK_STREAM, ("127.0.0.1", 0)))
        outside = CountingServer(ns.socket(socket.SOCK_STREAM, (OUTSIDE, 0)))
        try:
            # Pulled outside the namespace, where the test cache's image sources are reachable; then the
            # daemon is restarted inside it (the next CLI call starts it there).
            harness.banger("image", "pull", GOLDEN, check=True, timeout=3600)
            harness.stop()
            harness.prefix = ["ip", "netns", "exec", ns.name]
            yield Lab(harness, loopback, outside)
        finally:
            harness.cleanup()
            loopback.close()
            outside.close()
            shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


def _give_outside_address(ns: NetNamespace) -> None:
    # A veth pair with both ends in the namespace: an up interface, an address and a default route
    # (passt needs one to start), and nothing beyond the namespace.
    ns.run(["ip", "link", "add", "out0", "type", "veth", "peer", "name", "out1"])
    ns.run(["ip", "addr", "add", f"{OUTSIDE}/24", "dev", "out0"])
    ns.run(["ip", "link", "set", "out0", "up"])
    ns.run(["ip", "link", "set", "out1", "up"])
    ns.run(["ip", "route", "add", "default", "via", "198.18.0.254", "dev", "out0"])


def probe(e2e: E2E, vm: str, address: str, port: int) -> str:
    """What the guest reads from ``address:port`` within 5 s ('' when it cannot connect)."""
    script = f"exec 3<>/dev/tcp/{address}/{port} && head -c {len(GREETING)} <&3"
    return e2e.ssh(vm, "timeout", "5", "bash", "-c", script).stdout


def passt_pids(e2e: E2E) -> list[int]:
    """passt processes serving this session's VMs (their socket lives under its runtime dir)."""
    needle = e2e.env["XDG_RUNTIME_DIR"].encode()
    return pids_whose_cmdline(
        lambda cmd: Path(cmd.split(b"\0")[0].decode(errors="replace")).name == "passt" and needle in cmd
    )


def test_default_guest_has_egress_but_not_host_loopback(lab: Lab) -> None:
    e2e, port = lab.e2e, lab.loopback.port
    e2e.banger("vm", "create", "--name", "isolated", check=True)
    try:
        assert e2e.vm("isolated")["host_access"] is False
        # 10.0.2.2 first: slirp would land it on host loopback.
        assert probe(e2e, "isolated", "10.0.2.2", port) == ""
        # Every other alias of slirp's subnet was host loopback too; reach one through the gateway.
        e2e.ssh("isolated", "ip", "route", "add", "10.0.2.77/32", "via", "10.0.2.2")
        assert probe(e2e, "isolated", "10.0.2.77", port) == ""
        assert probe(e2e, "isolated", "10.0.2.3", port) == ""
        assert lab.loopback.accepted == 0
        # Egress: the guest reaches an address beyond its gateway.
        assert probe(e2e, "isolated", OUTSIDE, lab.outside.port) == GREETING.decode()
        assert lab.outside.accepted == 1
        assert len(passt_pids(e2e)) == 1
        # banger's own ssh forward still reaches the guest.
        assert e2e.ssh("isolated", "true").returncode == 0
    finally:
        e2e.banger("vm", "delete", "--force", "isolated", check=True)
    assert passt_pids(e2e) == []  # passt went with the VM
    ran = e2e.banger("vm", "run", "--name", "runner", "--rm", "--", "echo", "ran", check=True)
    assert ran.stdout.strip().endswith("ran")
    assert passt_pids(e2e) == []


def test_host_access_guest_reaches_host_loopback(lab: Lab) -> None:
    e2e = lab.e2e
    e2e.banger("vm", "create", "--name", "opened", "--host-access", check=True)
    try:
        assert e2e.vm("opened")["host_access"] is True
        assert probe(e2e, "opened", "10.0.2.2", lab.loopback.port) == GREETING.decode()
        assert lab.loopback.accepted == 1
        assert probe(e2e, "opened", OUTSIDE, lab.outside.port) == GREETING.decode()
    finally:
        e2e.banger("vm", "delete", "--force", "opened", check=True)
