"""Published ports end to end: a guest's ``python3 -m http.server`` on the host's 127.0.0.1.

usernet here (the session's daemon; QEMU's hostfwd keeps every packet on
loopback). A fixed host port and a picked one (``-p GUEST``) publish the
same guest port; a conflicting create fails in one line and leaves nothing.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.support.e2e import E2E

pytestmark = pytest.mark.e2e

GUEST_PORT = 8000
PAGE = "published-from-the-guest"
#: How long the guest's server gets to answer through the forward (TCG is slow).
FETCH_TIMEOUT = 90.0


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_page(e2e: E2E, vm: str) -> None:
    """Start ``python3 -m http.server`` in the guest as a transient systemd unit (it outlives the ssh session)."""
    script = (
        f"mkdir -p /srv/www && echo {PAGE} > /srv/www/index.html && "
        f"systemd-run --unit banger-test-http python3 -m http.server {GUEST_PORT} --directory /srv/www"
    )
    result = e2e.ssh(vm, "sh", "-c", script)
    assert result.returncode == 0, result.stderr


def fetch(port: int, timeout: float = FETCH_TIMEOUT) -> str:
    """The page at ``127.0.0.1:port``, retried until the guest's server answers (bounded)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
                return str(response.read().decode().strip())
        except (urllib.error.URLError, OSError) as exc:  # the server may not be up yet
            last = exc
            time.sleep(1)
    raise AssertionError(f"nothing answered on 127.0.0.1:{port} within {timeout:.0f} s: {last}")


def test_a_guest_http_server_is_reached_on_its_published_loopback_ports(e2e: E2E) -> None:
    fixed = free_port()
    # UDP to an isolated guest on QEMU's restrict=on (this session: usernet_egress = false) would be a silent
    # black hole (slirp drops the guest's UDP replies): refused in one line, before anything exists.
    udp = e2e.banger("vm", "create", "--name", "web", "-p", f"{free_port(socket.SOCK_DGRAM)}:53/udp")
    assert udp.returncode != 0 and udp.stderr.startswith("banger: error: UDP ports cannot reach an isolated usernet")
    assert udp.stderr.count("\n") == 1 and e2e.vms() == []
    created = e2e.banger("vm", "create", "--name", "web", "-p", f"{fixed}:{GUEST_PORT}", "-p", str(GUEST_PORT))
    assert created.returncode == 0, created.stderr
    try:
        ports = e2e.vm("web")["ports"]
        assert isinstance(ports, list) and len(ports) == 2
        picked = ports[1]["host_port"]
        assert ports == [
            {"host_port": fixed, "guest_port": GUEST_PORT, "protocol": "tcp", "host_address": "127.0.0.1"},
            {"host_port": picked, "guest_port": GUEST_PORT, "protocol": "tcp", "host_address": "127.0.0.1"},
        ]
        serve_page(e2e, "web")
        assert fetch(fixed) == PAGE
        assert fetch(picked) == PAGE

        listed = e2e.banger("vm", "port", "web", check=True).stdout.splitlines()
        assert listed == [
            f"{GUEST_PORT}/tcp -> 127.0.0.1:{fixed}",
            f"{GUEST_PORT}/tcp -> 127.0.0.1:{picked}",
        ]
        assert json.loads(e2e.banger("vm", "port", "web", "--json", check=True).stdout) == ports
        column = f"{fixed}->{GUEST_PORT}/tcp,{picked}->{GUEST_PORT}/tcp"
        assert column in e2e.banger("vm", "list", check=True).stdout

        # The same host port again: one line, before anything is created.
        clash = e2e.banger("vm", "create", "--name", "clash", "-p", f"{fixed}:80")
        assert clash.returncode != 0
        assert clash.stderr.strip().count("\n") == 0, clash.stderr
        assert f"host port {fixed}/tcp" in clash.stderr and "Traceback" not in clash.stderr
        assert [vm["name"] for vm in e2e.vms()] == ["web"]
    finally:
        e2e.banger("vm", "delete", "--force", "web", check=True)
    # The forward went with the VM: nothing listens on the published port any more.
    with socket.socket() as sock:
        # SO_REUSEADDR: a TIME_WAIT left by the fetches is no listener; the bind fails only while one listens.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", fixed))
        sock.listen()


def test_a_published_port_taken_after_create_fails_the_start_naming_the_port(e2e: E2E) -> None:
    """The port was free at create; a process took it since: the start fails with QEMU's reason, nothing hangs."""
    port = free_port()
    e2e.banger("vm", "create", "--name", "late", "--no-start", "-p", f"{port}:{GUEST_PORT}", check=True)
    try:
        with socket.create_server(("127.0.0.1", port)):
            started = e2e.banger("vm", "start", "late")
        assert started.returncode != 0 and "Traceback" not in started.stderr
        assert "banger: error: VM late failed to start: QEMU exited with status 1" in started.stderr
        assert f"Could not set up host forwarding rule 'tcp:127.0.0.1:{port}-:{GUEST_PORT}'" in started.stderr
        assert e2e.vm("late")["state"] == "error"
    finally:
        e2e.banger("vm", "delete", "--force", "late", check=True)
