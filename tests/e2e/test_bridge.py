"""Bridge networking end to end, inside a network namespace this test creates and deletes.

The daemon and the CLI run in the namespace (the daemon is started by the CLI,
so it inherits it); the guest gets a tap on banger's bridge, an IP from the
CIDR and a ``NAME.vm`` name served by banger's DNS server, which the
namespace's resolver points at.
"""

from __future__ import annotations

import ipaddress
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_ports import GUEST_PORT, PAGE, serve_page
from tests.netns import NetNamespace, temporary_netns
from tests.support.e2e import E2E, GOLDEN, make_env, pids_whose_cmdline

BRIDGE_IP = "172.16.0.1"


@pytest.fixture
def bridged(tmp_path: Path) -> Iterator[tuple[E2E, NetNamespace]]:
    with temporary_netns() as ns:
        etc = Path("/etc/netns") / ns.name
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(f"nameserver {BRIDGE_IP}\n")
        env = make_env(tmp_path, 'network_backend = "bridge"\nssh_ready_timeout = 420\n')
        harness = E2E(env=env, root=tmp_path, prefix=["ip", "netns", "exec", ns.name])
        try:
            harness.banger("image", "pull", GOLDEN, check=True, timeout=3600)
            yield harness, ns
        finally:
            harness.cleanup()
            shutil.rmtree(etc, ignore_errors=True)
            shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


def dig(ns: NetNamespace, *args: str) -> str:
    return ns.run(["dig", "+time=2", "+tries=2", f"@{BRIDGE_IP}", *args], check=False).stdout


def links(ns: NetNamespace) -> str:
    return ns.run(["ip", "-br", "link"]).stdout


def test_vm_on_the_bridge_with_dns_and_ssh_config(bridged: tuple[E2E, NetNamespace]) -> None:
    e2e, ns = bridged
    e2e.banger("vm", "create", "--name", "web", check=True)
    vm = e2e.vm("web")
    ip = str(vm["guest_ip"])
    assert vm["network"] == "bridge" and vm["address"] == ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("172.16.0.0/24") and ip != BRIDGE_IP
    tap = "bgr" + str(vm["id"])[:12]
    assert "banger0" in links(ns) and tap in links(ns)
    assert ns.run(["nft", "list", "table", "ip", "banger"], check=False).returncode == 0

    # ssh over the bridge; the guest has the address the host allocated.
    assert e2e.ssh("web", "cat", "/etc/hostname").stdout == "web\n"
    assert f"inet {ip}/24" in e2e.ssh("web", "ip", "-4", "-o", "addr", "show", "eth0").stdout

    # banger's DNS: the name while it runs, REFUSED for everything else.
    assert dig(ns, "+short", "web.vm").strip() == ip
    assert "status: REFUSED" in dig(ns, "example.com")
    assert ns.run(["getent", "hosts", "web.vm"]).stdout.split()[0] == ip  # the namespace's resolver
    ssh_config = Path(e2e.env["XDG_CONFIG_HOME"]) / "banger" / "ssh_config"
    probe = ns.run(["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "web.vm", "hostname"], check=False)
    assert probe.returncode == 0 and probe.stdout == "web\n", probe.stderr

    # Stopped: the name is gone at once, and so is the tap.
    e2e.banger("vm", "stop", "web", check=True)
    assert "status: NXDOMAIN" in dig(ns, "web.vm")
    assert tap not in links(ns)

    # A second daemon start finds and reuses what exists.
    e2e.stop()
    assert e2e.banger("vm", "list", check=True).returncode == 0
    assert links(ns).count("banger0") == 1
    assert f"inet {BRIDGE_IP}/24" in ns.run(["ip", "-4", "-o", "addr", "show", "banger0"]).stdout
    e2e.banger("vm", "start", "web", check=True)
    assert dig(ns, "+short", "web.vm").strip() == ip
    e2e.banger("vm", "delete", "--force", "web", check=True)
    assert tap not in links(ns)


#: Fetches http://127.0.0.1:PORT/index.html from inside the namespace, retrying for up to 90 s (TCG is slow).
FETCH_IN_NAMESPACE = """
import sys, time, urllib.request
deadline = time.monotonic() + 90
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/index.html", timeout=10) as response:
            print(response.read().decode().strip())
            break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"nothing answered: {exc}")
        time.sleep(1)
"""


def forwarders(port: int) -> list[int]:
    """The bridge's forwarder processes publishing ``port``."""
    rule = f"tcp:{port}:{GUEST_PORT}".encode()
    return pids_whose_cmdline(lambda cmd: b"banger_bridge.forward" in cmd and rule in cmd.split(b"\0"))


def test_a_published_port_reaches_the_bridged_guest_from_loopback(bridged: tuple[E2E, NetNamespace]) -> None:
    """``-p`` on a bridge: the daemon's forwarder on the namespace's 127.0.0.1 reaches the guest's server."""
    e2e, ns = bridged
    e2e.banger("vm", "create", "--name", "pub", "-p", str(GUEST_PORT), check=True)
    try:
        (published,) = e2e.vm("pub")["ports"]  # type: ignore[misc]
        port = published["host_port"]
        serve_page(e2e, "pub")
        fetched = ns.run([sys.executable, "-c", FETCH_IN_NAMESPACE, str(port)], check=False, timeout=120)
        assert fetched.returncode == 0 and fetched.stdout.strip() == PAGE, fetched.stderr
        assert e2e.banger("vm", "port", "pub", check=True).stdout == f"{GUEST_PORT}/tcp -> 127.0.0.1:{port}\n"
        assert len(forwarders(port)) == 1
        # The forwarder outlives a daemon restart, like the VMM; the next daemon adopts and later stops it.
        e2e.stop()
        assert len(forwarders(port)) == 1
        again = ns.run([sys.executable, "-c", FETCH_IN_NAMESPACE, str(port)], check=False, timeout=120)
        assert again.returncode == 0 and again.stdout.strip() == PAGE, again.stderr
        assert e2e.vm("pub")["state"] == "running"  # a new daemon, started by this CLI call
    finally:
        e2e.banger("vm", "delete", "--force", "pub", check=True)
    assert forwarders(port) == []
    # The forwarder went with the VM: the port is free in the namespace again.
    # SO_REUSEADDR: a TIME_WAIT left by the fetch is no listener; the bind fails only while one listens.
    probe = f"import socket; s = socket.socket(); s.setsockopt(1, 2, 1); s.bind(('127.0.0.1', {port})); s.listen()"
    free = ns.run([sys.executable, "-c", probe], check=False)
    assert free.returncode == 0, free.stderr
