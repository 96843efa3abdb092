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
#: The address reserved for template VMs on the default 172.16.0.0/24 (banger_core.daemon.vm.alloc.template_ip).
TEMPLATE_IP = "172.16.0.254"


@pytest.fixture
def bridged(tmp_path: Path) -> Iterator[tuple[E2E, NetNamespace]]:
    with temporary_netns() as ns:
        etc = Path("/etc/netns") / ns.name
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(f"nameserver {BRIDGE_IP}\n")
        # No template behind the tests' backs: only the warm-start test makes one (`image warm`).
        env = make_env(tmp_path, 'network_backend = "bridge"\nssh_ready_timeout = 420\nwarm_auto = false\n')
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


#: What a bridged guest says about its network: name, eth0's address and MAC, default route, nameservers.
NETWORK_FACTS = (
    "hostname; ip -4 -o addr show dev eth0 scope global | awk '{print $4}'; cat /sys/class/net/eth0/address; "
    "ip -4 route show default; grep ^nameserver /etc/resolv.conf"
)


def test_warm_vms_on_the_bridge_get_their_own_address_and_mac(bridged: tuple[E2E, NetNamespace]) -> None:
    """Two VMs restored from one bridge template, both running: each its own IP, MAC, ssh and ``NAME.vm``.

    The template guest booted with the address reserved for templates and the template's MAC; the
    VMM's saved NIC state and the guest keep both, so each restored VM must take its own through the agent.
    """
    e2e, ns = bridged
    warmed = e2e.banger("image", "warm", GOLDEN, timeout=1200)
    assert warmed.returncode == 0, warmed.stderr
    assert "guest agent does not answer" not in warmed.stderr, warmed.stderr
    assert " on bridge, " in warmed.stdout, warmed.stdout
    ssh_config = Path(e2e.env["XDG_CONFIG_HOME"]) / "banger" / "ssh_config"
    names = ("bridge-a", "bridge-b")
    try:
        vms = {}
        for name in names:
            e2e.banger("vm", "create", "--name", name, check=True)
            vms[name] = e2e.vm(name)
            assert vms[name]["booted"] == "warm"
        addresses = {str(vm["guest_ip"]) for vm in vms.values()}
        assert len(addresses) == 2 and TEMPLATE_IP not in addresses
        for name, vm in vms.items():
            ip, mac, tap = str(vm["guest_ip"]), str(vm["mac"]), "bgr" + str(vm["id"])[:12]
            # vm ssh: at the VM's own address, its host key checked strictly.
            facts = e2e.ssh(name, "sh", "-c", NETWORK_FACTS)
            assert facts.returncode == 0, facts.stderr
            hostname, address, guest_mac, route, *nameservers = facts.stdout.splitlines()
            assert (hostname, address, guest_mac) == (name, f"{ip}/24", mac)
            assert route.startswith(f"default via {BRIDGE_IP} dev eth0")
            assert nameservers == [f"nameserver {BRIDGE_IP}"]
            # The bridge learnt the VM's own MAC on the VM's own tap. (The template's MAC may be listed too:
            # QEMU announces the NIC's migrated MAC on the tap once the incoming state is loaded.)
            fdb = ns.run(["bridge", "fdb", "show", "br", "banger0"]).stdout.splitlines()
            assert [line.split()[2] for line in fdb if line.startswith(f"{mac} ")] == [tap], fdb
            # banger's DNS in the namespace, then plain ssh through `banger ssh-config` (StrictHostKeyChecking yes).
            assert dig(ns, "+short", f"{name}.vm").strip() == ip
            assert ns.run(["getent", "hosts", f"{name}.vm"]).stdout.split()[0] == ip
            probe = ns.run(["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", f"{name}.vm", "hostname"], check=False)
            assert probe.returncode == 0 and probe.stdout == f"{name}\n", probe.stderr
        # Guest to guest across the bridge, by name through banger's DNS: bridge-b's sshd greets bridge-a.
        other = str(vms["bridge-b"]["guest_ip"])
        banner = "getent hosts bridge-b.vm; exec 3<>/dev/tcp/bridge-b.vm/22; head -c 4 <&3"
        reach = e2e.ssh("bridge-a", "timeout", "20", "bash", "-c", banner)
        assert reach.returncode == 0 and reach.stdout.split()[0] == other, reach.stderr
        assert reach.stdout.endswith("SSH-"), reach.stdout

        run = e2e.banger("vm", "run", "--rm", "--name", "bridge-run", "--", "hostname")
        assert run.returncode == 0, run.stderr
        assert run.stdout == "bridge-run\n"

        # A later start boots the VM's own disks cold, with its own address from the kernel command line.
        e2e.banger("vm", "restart", "bridge-b", check=True, timeout=900)
        assert e2e.vm("bridge-b")["booted"] == "cold"
        again = e2e.ssh("bridge-b", "sh", "-c", NETWORK_FACTS)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[:3] == ["bridge-b", f"{other}/24", str(vms["bridge-b"]["mac"])]
    finally:
        for name in names:
            e2e.banger("vm", "delete", "--force", name, timeout=120)
        e2e.banger("image", "warm", "--rm", GOLDEN, timeout=120)
