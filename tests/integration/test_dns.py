"""The .vm DNS server on real sockets, asked by a real client (``dig``).

On loopback (``dns_loopback_port``) in the test process, and on a bridge
address inside a network namespace the test creates: either a socket bound
there and handed to the server, or the server itself started inside the
namespace and binding the bridge address on port 53.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from dnslib import DNSRecord

from banger_core.daemon.dns import DnsServer, DnsServerError
from banger_core.host.netops import NetlinkHostOps
from banger_core.testing.dns import DnsServerThread
from tests.netns import NetNamespace, temporary_netns

pytestmark = pytest.mark.integration
if shutil.which("dig") is None:
    pytest.skip("needs dig: apt-get install bind9-dnsutils", allow_module_level=True)

BRIDGE_CONFIG = {"cidr": "172.16.0.0/24", "bridge_ip": "172.16.0.1"}
MALFORMED_PACKETS = 1000


@dataclass
class Dig:
    status: str
    answer: list[str]
    authority: list[str]


def parse_dig(output: str) -> Dig:
    status = re.search(r"status: (\w+)", output)
    assert status, output
    sections: dict[str, list[str]] = {"ANSWER": [], "AUTHORITY": []}
    current = None
    for line in output.splitlines():
        header = re.match(r";; (\w+) SECTION:", line)
        if header:
            current = header.group(1)
        elif not line.strip():
            current = None
        elif current in sections:
            sections[current].append(" ".join(line.split()))
    return Dig(status.group(1), sections["ANSWER"], sections["AUTHORITY"])


def dig_argv(server: str, port: int, name: str, qtype: str = "A") -> list[str]:
    return ["dig", f"@{server}", "-p", str(port), "+tries=1", "+time=2", name, qtype]


def dig(server: str, port: int, name: str, qtype: str = "A") -> Dig:
    result = subprocess.run(dig_argv(server, port, name, qtype), capture_output=True, text=True, timeout=30)
    return parse_dig(result.stdout)


def dig_in(ns: NetNamespace, server: str, port: int, name: str, qtype: str = "A") -> Dig:
    return parse_dig(ns.run(dig_argv(server, port, name, qtype)).stdout)


def send_malformed(address: tuple[str, int], count: int = MALFORMED_PACKETS, seed: int = 1234) -> int:
    """Send ``count`` junk datagrams (random bytes, cut queries, bad pointers); bounded, seeded."""
    rng = random.Random(seed)
    valid = DNSRecord.question("web.vm").pack()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            kind = i % 4
            if kind == 0:
                packet = rng.randbytes(rng.randrange(0, 600))
            elif kind == 1:
                packet = valid[: rng.randrange(0, len(valid))]
            elif kind == 2:
                packet = valid[:12] + b"\xc0\x0c\x00\x01\x00\x01"  # pointer loop
            else:
                packet = bytes(b ^ rng.randrange(1, 256) if rng.random() < 0.2 else b for b in valid)
            sock.sendto(packet, address)
    return count


def assert_serves_the_zone(ask: Callable[[str, str], Dig], table: dict[str, str]) -> None:
    """The acceptance checks shared by every placement of the server."""
    table["web"] = "172.16.0.7"
    found = ask("web.vm", "A")
    assert (found.status, found.answer) == ("NOERROR", ["web.vm. 5 IN A 172.16.0.7"])

    aaaa = ask("web.vm", "AAAA")
    assert (aaaa.status, aaaa.answer) == ("NOERROR", [])
    assert aaaa.authority[0].startswith("vm. 5 IN SOA ns.vm. hostmaster.vm.")

    del table["web"]
    gone = ask("web.vm", "A")
    assert (gone.status, gone.answer) == ("NXDOMAIN", [])

    refused = ask("example.com", "A")
    assert (refused.status, refused.answer) == ("REFUSED", [])


@pytest.fixture
def dns_loopback_port() -> int:
    """A free UDP port on 127.0.0.1, as a config's ``dns_loopback_port`` would name."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_loopback_server_answers_dig(dns_loopback_port: int) -> None:
    table: dict[str, str] = {}
    with DnsServerThread(DnsServer(table.get), binds=[("127.0.0.1", dns_loopback_port)]) as server:
        assert server.addresses == [("127.0.0.1", dns_loopback_port)]
        assert_serves_the_zone(lambda name, qtype: dig("127.0.0.1", dns_loopback_port, name, qtype), table)


def test_loopback_server_survives_malformed_packets(dns_loopback_port: int) -> None:
    table = {"web": "172.16.0.7"}
    with DnsServerThread(DnsServer(table.get), binds=[("127.0.0.1", dns_loopback_port)]):
        send_malformed(("127.0.0.1", dns_loopback_port))
        assert dig("127.0.0.1", dns_loopback_port, "web.vm").answer == ["web.vm. 5 IN A 172.16.0.7"]


def test_loopback_server_listens_only_where_told(dns_loopback_port: int) -> None:
    with DnsServerThread(DnsServer({"web": "172.16.0.7"}.get), binds=[("127.0.0.1", dns_loopback_port)]):
        other = subprocess.run(dig_argv("127.0.0.2", dns_loopback_port, "web.vm"), capture_output=True, text=True)
    assert other.returncode == 9, other.stdout  # dig: no reply from 127.0.0.2


def test_a_taken_port_is_a_clear_error(dns_loopback_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", dns_loopback_port))
        thread = DnsServerThread(DnsServer({}.get), binds=[("127.0.0.1", dns_loopback_port)])
        with pytest.raises(DnsServerError, match=rf"^cannot listen for DNS on 127.0.0.1:{dns_loopback_port}: .*in use"):
            thread.start()


def test_stop_closes_the_socket(dns_loopback_port: int) -> None:
    with DnsServerThread(DnsServer({}.get), binds=[("127.0.0.1", dns_loopback_port)]):
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", dns_loopback_port))  # free again


# ---------------------------------------------------------------------------- on a bridge, in a namespace


@pytest.fixture
def ns() -> Iterator[NetNamespace]:
    with temporary_netns() as namespace:
        namespace.call(NetlinkHostOps(BRIDGE_CONFIG).ensure_bridge, "banger0", "172.16.0.1/24")
        yield namespace


def test_bridge_server_answers_dig_inside_the_namespace(ns: NetNamespace) -> None:
    table: dict[str, str] = {}
    sock = ns.socket(socket.SOCK_DGRAM, ("172.16.0.1", 53))
    with DnsServerThread(DnsServer(table.get), sockets=[sock]) as server:
        assert server.addresses == [("172.16.0.1", 53)]
        assert_serves_the_zone(lambda name, qtype: dig_in(ns, "172.16.0.1", 53, name, qtype), table)

        table["web"] = "172.16.0.7"
        assert ns.call(send_malformed, ("172.16.0.1", 53)) == MALFORMED_PACKETS
        assert dig_in(ns, "172.16.0.1", 53, "web.vm").answer == ["web.vm. 5 IN A 172.16.0.7"]


def _serve_on_the_bridge_and_dig() -> dict[str, Dig | int]:
    """Inside the namespace: the server binds 172.16.0.1:53 itself; dig asks it and loopback."""
    table = {"web": "172.16.0.7"}
    results: dict[str, Dig | int] = {}
    with DnsServerThread(DnsServer(table.get), binds=[("172.16.0.1", 53)]):
        ran = subprocess.run(dig_argv("172.16.0.1", 53, "web.vm"), capture_output=True, text=True, timeout=30)
        results["bridge"] = parse_dig(ran.stdout)
        loopback = subprocess.run(dig_argv("127.0.0.1", 53, "web.vm"), capture_output=True, text=True, timeout=30)
        results["loopback_exit"] = loopback.returncode
    assert threading.active_count() == 1  # the server thread is gone
    return results


def test_server_binds_the_bridge_address_on_port_53_only(ns: NetNamespace) -> None:
    results = ns.call(_serve_on_the_bridge_and_dig)

    bridge = results["bridge"]
    assert isinstance(bridge, Dig)
    assert bridge.answer == ["web.vm. 5 IN A 172.16.0.7"]
    assert results["loopback_exit"] == 9  # nothing answers on 127.0.0.1:53
