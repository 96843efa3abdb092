"""NetlinkHostOps and the bridge backend against the real kernel, each test in its own network namespace.

The code under test runs in a forked child that entered the namespace
(``ns.call``); the checks read the namespace with ``ip -j`` and ``nft -j``
(``ns.run``). Nothing here touches the host's own interfaces.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from banger_bridge.network import BridgeError, BridgeNetwork
from banger_core.host import netops
from banger_core.host.hostops import host_ops_for_current_user
from banger_core.host.netops import HostOpError, NetlinkHostOps
from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import NetAttachment, NicRequest
from tests.netns import NetNamespace, require_root, temporary_netns

pytestmark = pytest.mark.integration
if shutil.which("nft") is None:
    pytest.skip("needs nft: apt-get install nftables", allow_module_level=True)

CONFIG = {"cidr": "172.16.0.0/24", "bridge_ip": "172.16.0.1"}
VM_ID = "0123456789abcdef0123456789abcdef"
# Tap owners are uids without a passwd entry (4242, 4243), so `ip -j` prints them as numbers.


@pytest.fixture
def ns() -> Iterator[NetNamespace]:
    with temporary_netns() as namespace:
        yield namespace


def links(ns: NetNamespace) -> dict[str, dict[str, Any]]:
    """Every link in the namespace, by name, with details (``ip -j -d link``)."""
    return {link["ifname"]: link for link in json.loads(ns.run(["ip", "-j", "-d", "link", "show"]).stdout)}


def ipv4_addresses(ns: NetNamespace, name: str) -> list[str]:
    shown = json.loads(ns.run(["ip", "-j", "-4", "addr", "show", "dev", name]).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for entry in shown for a in entry["addr_info"]]


def nft_table(ns: NetNamespace) -> list[dict[str, Any]] | None:
    """The objects of table ``ip banger``, or None if it does not exist."""
    result = ns.run(["nft", "-j", "list", "table", "ip", "banger"], check=False)
    if result.returncode != 0:
        return None
    return list(json.loads(result.stdout)["nftables"])


def ops() -> NetlinkHostOps:
    return NetlinkHostOps(CONFIG)


def add_plain_link(ns: NetNamespace, name: str) -> None:
    """A link that is neither bridge nor tap (ifb: this kernel has no dummy module)."""
    ns.run(["ip", "link", "add", name, "type", "ifb"])


def add_routed_link(ns: NetNamespace, name: str, address: str) -> None:
    """An up veth with ``address``, which gives the namespace a connected route."""
    ns.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"])
    ns.run(["ip", "addr", "add", address, "dev", name])
    ns.run(["ip", "link", "set", name, "up"])
    ns.run(["ip", "link", "set", f"{name}p", "up"])


# ---------------------------------------------------------------------------- NetlinkHostOps


def test_ensure_bridge_creates_an_up_bridge_with_the_address(ns: NetNamespace) -> None:
    assert ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24") is True

    bridge = links(ns)["banger0"]
    assert bridge["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in bridge["flags"]
    assert ipv4_addresses(ns, "banger0") == ["172.16.0.1/24"]


def test_ensure_bridge_twice_changes_nothing(ns: NetNamespace) -> None:
    ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")
    index = links(ns)["banger0"]["ifindex"]

    assert ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24") is False
    assert links(ns)["banger0"]["ifindex"] == index


def test_ensure_bridge_repairs_a_bridge_that_is_down_and_lost_its_address(ns: NetNamespace) -> None:
    ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")
    ns.run(["ip", "link", "set", "banger0", "down"])
    ns.run(["ip", "addr", "flush", "dev", "banger0"])
    ns.run(["ip", "addr", "add", "172.16.0.77/24", "dev", "banger0"])  # a stray address

    assert ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24") is True

    assert "UP" in links(ns)["banger0"]["flags"]
    assert ipv4_addresses(ns, "banger0") == ["172.16.0.1/24"]


def test_ensure_bridge_refuses_a_link_that_is_not_a_bridge(ns: NetNamespace) -> None:
    add_plain_link(ns, "banger0")

    with pytest.raises(HostOpError, match=r"network interface banger0 exists but is not a bridge: delete it"):
        ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")

    assert links(ns)["banger0"]["linkinfo"]["info_kind"] == "ifb"
    assert ipv4_addresses(ns, "banger0") == []


def test_create_tap_makes_an_owned_tap_on_the_bridge(ns: NetNamespace) -> None:
    ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")

    ns.call(ops().create_tap, "bgr0123456789ab", "banger0", 4242)
    ns.call(ops().create_tap, "bgr0123456789ab", "banger0", 4242)  # a retry is fine

    tap = links(ns)["bgr0123456789ab"]
    assert tap["master"] == "banger0"
    assert "UP" in tap["flags"]
    info = tap["linkinfo"]["info_data"]
    assert (info["type"], info["pi"], info["persist"], info["user"]) == ("tap", False, True, 4242)


def test_create_tap_refuses_a_tap_of_another_owner_and_a_missing_bridge(ns: NetNamespace) -> None:
    with pytest.raises(HostOpError, match=r"bridge banger0 does not exist"):
        ns.call(ops().create_tap, "bgr0123456789ab", "banger0", 4242)
    assert "bgr0123456789ab" not in links(ns)

    ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")
    ns.call(ops().create_tap, "bgr0123456789ab", "banger0", 4242)
    with pytest.raises(HostOpError, match=r"tap bgr0123456789ab exists but belongs to uid 4242, not 4243"):
        ns.call(ops().create_tap, "bgr0123456789ab", "banger0", 4243)


def test_rename_tap_keeps_owner_bridge_and_state(ns: NetNamespace) -> None:
    ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")
    ns.call(ops().create_tap, "bgrpool0", "banger0", 4242)

    ns.call(ops().rename_tap, "bgrpool0", "bgr0123456789ab")

    found = links(ns)
    assert "bgrpool0" not in found
    tap = found["bgr0123456789ab"]
    assert (tap["master"], "UP" in tap["flags"], tap["linkinfo"]["info_data"]["user"]) == ("banger0", True, 4242)
    with pytest.raises(HostOpError, match=r"tap bgrpool0 does not exist"):
        ns.call(ops().rename_tap, "bgrpool0", "bgrpool1")


def test_delete_is_idempotent_and_leaves_foreign_links_alone(ns: NetNamespace) -> None:
    ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")
    ns.call(ops().create_tap, "bgr0123456789ab", "banger0", 0)
    add_plain_link(ns, "bgrdummy")

    for _ in range(2):
        ns.call(ops().delete_tap, "bgr0123456789ab")
        ns.call(ops().delete_bridge, "banger0")
    with pytest.raises(HostOpError, match=r"bgrdummy is not a tap: banger left it alone"):
        ns.call(ops().delete_tap, "bgrdummy")

    assert sorted(links(ns)) == ["bgrdummy", "lo"]


def test_list_links_and_host_routes(ns: NetNamespace) -> None:
    ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")
    ns.call(ops().create_tap, "bgrpool0", "banger0", 0)
    ns.call(ops().create_tap, "bgrpool1", "banger0", 0)
    add_routed_link(ns, "veth0", "10.99.0.1/16")
    ns.run(["ip", "route", "add", "default", "dev", "veth0"])

    assert ns.call(ops().list_links, "bgrpool") == ["bgrpool0", "bgrpool1"]
    assert ns.call(ops().list_links, "banger") == ["banger0"]
    # banger's own bridge route is left out; local-table routes never appear.
    assert ns.call(ops().host_routes) == ["0.0.0.0/0", "10.99.0.0/16"]


def test_nat_is_idempotent_and_removed_as_a_unit(ns: NetNamespace) -> None:
    ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])

    ns.call(ops().ensure_nat, "172.16.0.0/24", "banger0")
    ns.call(ops().ensure_nat, "172.16.0.0/24", "banger0")

    assert ns.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    table = nft_table(ns)
    assert table is not None
    rules = [item["rule"] for item in table if "rule" in item]
    assert len(rules) == 1
    rendered = ns.run(["nft", "list", "table", "ip", "banger"]).stdout
    assert 'ip saddr 172.16.0.0/24 oifname != "banger0" masquerade' in rendered

    ns.call(ops().remove_nat, "172.16.0.0/24", "banger0")
    ns.call(ops().remove_nat, "172.16.0.0/24", "banger0")
    assert nft_table(ns) is None


def _send_udp(address: tuple[str, int], payload: bytes) -> None:
    """From a fresh socket: a new source port, so a new flow that conntrack has not mapped yet."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, address)


def _source_seen_upstream(guest: NetNamespace, listener: socket.socket, payload: bytes) -> str:
    guest.call(_send_udp, ("10.99.0.2", 9999), payload)
    listener.settimeout(5)
    data, source = listener.recvfrom(1024)
    assert data == payload
    return str(source[0])


def test_nat_masquerades_guest_traffic_leaving_the_host(ns: NetNamespace) -> None:
    """A guest (a namespace on the bridge) reaches an upstream namespace with the host's address."""
    with temporary_netns() as guest, temporary_netns() as upstream:
        ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")
        ns.run(["ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", upstream.name])
        ns.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "up0"])
        ns.run(["ip", "link", "set", "up0", "up"])
        upstream.run(["ip", "addr", "add", "10.99.0.2/24", "dev", "up1"])
        upstream.run(["ip", "link", "set", "up1", "up"])
        ns.run(["ip", "link", "add", "vm0", "type", "veth", "peer", "name", "eth0", "netns", guest.name])
        ns.run(["ip", "link", "set", "vm0", "master", "banger0", "up"])
        guest.run(["ip", "addr", "add", "172.16.0.7/24", "dev", "eth0"])
        guest.run(["ip", "link", "set", "eth0", "up"])
        guest.run(["ip", "route", "add", "default", "via", "172.16.0.1"])
        with upstream.socket(socket.SOCK_DGRAM, ("10.99.0.2", 9999)) as listener:
            ns.call(ops().ensure_nat, "172.16.0.0/24", "banger0")
            assert _source_seen_upstream(guest, listener, b"with NAT") == "10.99.0.1"

            ns.call(ops().remove_nat, "172.16.0.0/24", "banger0")
            assert _source_seen_upstream(guest, listener, b"without NAT") == "172.16.0.7"


def _touching_netlink_fails(call: str, *args: Any, config: dict[str, str] = CONFIG) -> str:
    """Run ``NetlinkHostOps(config).<call>(*args)`` with netlink and nft replaced by tripwires;
    return the ValueError."""

    def tripwire(*_: Any, **__: Any) -> None:
        raise AssertionError("validation let a bad argument through to netlink/nft")

    netops.IPRoute = tripwire
    netops.subprocess.run = tripwire  # type: ignore[assignment]
    try:
        getattr(NetlinkHostOps(config), call)(*args)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{call}{args} was accepted")


@pytest.mark.parametrize(
    ("call", "args", "message"),
    [
        ("ensure_bridge", ("eth0", "172.16.0.1/24"), "start with 'banger'"),
        ("ensure_bridge", ("banger0123456789", "172.16.0.1/24"), "1-15 characters"),
        ("ensure_bridge", ("banger0;reboot", "172.16.0.1/24"), "1-15 characters"),
        ("ensure_bridge", ("banger0", "10.0.0.1/24"), "not inside cidr 172.16.0.0/24"),
        ("ensure_bridge", ("banger0", "172.16.0.1/16"), "not inside cidr 172.16.0.0/24 with prefix /24"),
        ("ensure_bridge", ("banger0", "172.16.0.255/24"), "not a usable address"),
        ("ensure_bridge", ("banger0", "bogus"), "not an IPv4 address"),
        ("create_tap", ("tap0", "banger0", 0), "start with 'bgr'"),
        ("create_tap", ("bgr0", "virbr0", 0), "start with 'banger'"),
        ("create_tap", ("bgr0", "banger0", -1), "invalid owner uid"),
        ("rename_tap", ("bgrpool0", "eth0"), "start with 'bgr'"),
        ("delete_tap", ("lo",), "start with 'bgr'"),
        ("delete_bridge", ("docker0",), "start with 'banger'"),
        ("list_links", ("eth",), "must start with 'banger' or 'bgr'"),
        ("ensure_nat", ("0.0.0.0/0", "banger0"), "outside the configured cidr"),
        ("ensure_nat", ("172.16.0.0/24", "eth0"), "start with 'banger'"),
        ("remove_nat", ("10.0.0.0/8", "banger0"), "outside the configured cidr"),
    ],
)
def test_validation_rejects_bad_arguments_before_touching_netlink(
    ns: NetNamespace, call: str, args: tuple[Any, ...], message: str
) -> None:
    before = links(ns)

    assert message in ns.call(_touching_netlink_fails, call, *args)

    assert links(ns) == before


def _racing_deleter(call: str, *args: Any) -> str:
    """Run ``NetlinkHostOps.<call>(*args)`` while another root process deletes each link the moment
    banger has added it (a real netlink delete right after the real add); return the HostOpError."""

    real_iproute = netops.IPRoute

    class DeletesWhatItAdds:
        def __enter__(self) -> DeletesWhatItAdds:
            self.ipr = real_iproute().__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.ipr.__exit__(*exc)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.ipr, name)

        def link(self, command: str, **attributes: Any) -> Any:
            result = self.ipr.link(command, **attributes)
            if command == "add":
                self.ipr.link("del", index=self.ipr.link_lookup(ifname=attributes["ifname"])[0])
            return result

    netops.IPRoute = DeletesWhatItAdds
    try:
        getattr(NetlinkHostOps(CONFIG), call)(*args)
    except HostOpError as exc:
        return str(exc)
    raise AssertionError(f"{call}{args} succeeded although its link was deleted")


@pytest.mark.parametrize(
    ("call", "args", "name"),
    [("ensure_bridge", ("banger0", "172.16.0.1/24"), "banger0"), ("create_tap", ("bgr0", "banger0", 0), "bgr0")],
)
def test_a_link_deleted_right_after_creation_is_a_clear_error(
    ns: NetNamespace, call: str, args: tuple[Any, ...], name: str
) -> None:
    if call == "create_tap":
        ns.call(ops().ensure_bridge, "banger0", "172.16.0.1/24")

    message = ns.call(_racing_deleter, call, *args)

    assert message == f"network interface {name} vanished right after banger created it: try again"
    assert name not in links(ns)


def test_bad_config_is_refused_by_the_calls_that_need_it(ns: NetNamespace) -> None:
    """Construction never fails (a usernet daemon builds these too); bridge and NAT calls refuse."""
    NetlinkHostOps({"cidr": "172.16.0.0/33", "bridge_ip": "172.16.0.1"})
    bad_cidr = {"cidr": "172.16.0.0/33", "bridge_ip": "172.16.0.1"}
    assert ns.call(_touching_netlink_fails, "ensure_nat", "172.16.0.0/24", "banger0", config=bad_cidr) == (
        "cidr '172.16.0.0/33' is not an IPv4 network like 172.16.0.0/24: fix it in config.toml"
    )
    bad_ip = {"cidr": "172.16.0.0/24", "bridge_ip": "10.0.0.1"}
    assert ns.call(_touching_netlink_fails, "ensure_bridge", "banger0", "172.16.0.1/24", config=bad_ip) == (
        "bridge_ip 10.0.0.1 is not a usable address inside cidr 172.16.0.0/24: fix it in config.toml"
    )


def test_root_gets_netlink_host_ops(banger_env: dict[str, str]) -> None:
    require_root()
    ops = host_ops_for_current_user(make_plugin_context(banger_env).config)

    assert isinstance(ops, NetlinkHostOps)
    assert (str(ops.cidr), str(ops.bridge_ip)) == ("172.16.0.0/24", "172.16.0.1")


def _as_nobody(call: str, *args: Any) -> Any:
    os.setgid(65534)
    os.setuid(65534)
    return getattr(ops(), call)(*args)


def test_missing_privilege_is_a_one_line_error(ns: NetNamespace) -> None:
    with pytest.raises(
        HostOpError, match=r"^setting up bridge banger0 failed: Operation not permitted: run the daemon"
    ):
        ns.call(_as_nobody, "ensure_bridge", "banger0", "172.16.0.1/24")
    with pytest.raises(HostOpError, match=r"^enabling IPv4 forwarding failed: Permission denied: run the daemon"):
        ns.call(_as_nobody, "ensure_nat", "172.16.0.0/24", "banger0")


# ---------------------------------------------------------------------------- the bridge backend on NetlinkHostOps


@pytest.fixture
def bridge(banger_env: dict[str, str], tmp_path: Path) -> BridgeNetwork:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.53\n")
    ctx = make_plugin_context(banger_env)
    ctx = dataclasses.replace(ctx, host_ops=NetlinkHostOps(ctx.config))
    return BridgeNetwork(ctx, resolv_conf_files=[resolv])


def _setup(driver: BridgeNetwork) -> list[str]:
    progress = RecordingProgress()
    driver.setup_host(progress)
    return progress.lines


def test_setup_host_makes_bridge_nat_and_spare_taps_and_is_idempotent(ns: NetNamespace, bridge: BridgeNetwork) -> None:
    first = ns.call(_setup, bridge)
    state = links(ns)
    second = ns.call(_setup, bridge)

    assert sorted(state) == ["banger0", "bgrpool0", "bgrpool1", "lo"]
    assert ipv4_addresses(ns, "banger0") == ["172.16.0.1/24"]
    assert all(state[tap]["master"] == "banger0" for tap in ("bgrpool0", "bgrpool1"))
    assert nft_table(ns) is not None
    assert "bridge banger0 created or repaired with 172.16.0.1/24" in first
    assert "created 2 spare tap(s)" in first
    assert second == ["NAT for 172.16.0.0/24 leaving through the host's other links"]
    assert {n: s["ifindex"] for n, s in links(ns).items()} == {n: s["ifindex"] for n, s in state.items()}


def test_setup_host_repairs_a_bridge_that_was_set_down(ns: NetNamespace, bridge: BridgeNetwork) -> None:
    ns.call(_setup, bridge)
    ns.run(["ip", "link", "set", "banger0", "down"])

    assert "bridge banger0 created or repaired with 172.16.0.1/24" in ns.call(_setup, bridge)
    assert "UP" in links(ns)["banger0"]["flags"]


def test_setup_host_refuses_a_cidr_that_overlaps_a_host_route(ns: NetNamespace, bridge: BridgeNetwork) -> None:
    add_routed_link(ns, "veth0", "172.16.5.1/12")

    with pytest.raises(BridgeError, match=r"^cidr 172.16.0.0/24 overlaps the host route 172.16.0.0/12: set cidr"):
        ns.call(_setup, bridge)

    assert sorted(links(ns)) == ["lo", "veth0", "veth0p"]
    assert nft_table(ns) is None


def test_setup_host_refuses_a_non_bridge_link_with_the_bridge_name(ns: NetNamespace, bridge: BridgeNetwork) -> None:
    add_plain_link(ns, "banger0")

    with pytest.raises(HostOpError, match=r"network interface banger0 exists but is not a bridge"):
        ns.call(_setup, bridge)


def _attach(driver: BridgeNetwork) -> NetAttachment:
    return driver.attach(NicRequest(vm_id=VM_ID, vm_name="web", mac="02:FC:00:00:00:07", guest_ip="172.16.0.7"))


def test_attach_hands_a_spare_tap_to_the_vm_and_detach_refills_the_pool(
    ns: NetNamespace, bridge: BridgeNetwork
) -> None:
    ns.call(_setup, bridge)
    spare_index = links(ns)["bgrpool0"]["ifindex"]

    attachment = ns.call(_attach, bridge)

    assert attachment.nic.tap_name == "bgr0123456789ab"
    assert attachment.nic.mac == "02:fc:00:00:00:07"
    assert (attachment.guest.address, attachment.guest.prefix) == ("172.16.0.7", 24)
    assert (attachment.guest.gateway, attachment.guest.dns) == ("172.16.0.1", "192.0.2.53")
    assert (attachment.ssh_host, attachment.ssh_port, attachment.dns_address) == ("172.16.0.7", 22, "172.16.0.7")
    found = links(ns)
    assert found["bgr0123456789ab"]["ifindex"] == spare_index  # renamed, not created
    assert found["bgr0123456789ab"]["master"] == "banger0"
    assert "bgrpool0" not in found

    ns.call(bridge.detach, attachment)
    ns.call(bridge.detach, attachment)

    assert sorted(links(ns)) == ["banger0", "bgrpool0", "bgrpool1", "lo"]
