"""The bridge backend's decisions, against a recording HostOps.

The real HostOps (netlink + nftables) is exercised with this backend in a
network namespace by tests/integration/test_netops.py; here the calls the
backend makes are asserted exactly, including the ones it must not make.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from banger_bridge.network import BridgeError, BridgeNetwork, tap_name_for
from banger_bridge.upstream import upstream_nameserver
from banger_core.common.plugins import PluginManager
from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import NicRequest, PluginContext

pytestmark = pytest.mark.unit

VM_ID = "0123456789abcdef0123456789abcdef"
TAP = "bgr0123456789ab"


class RecordingHostOps:
    """HostOps over an in-memory set of links; every call is recorded as ``(method, *args)``."""

    def __init__(self, links: dict[str, str] | None = None, routes: list[str] | None = None) -> None:
        self.links = dict(links or {})  # name -> "bridge" | "tap"
        self.routes = list(routes or [])
        self.calls: list[tuple[Any, ...]] = []

    def ensure_bridge(self, name: str, address: str) -> bool:
        self.calls.append(("ensure_bridge", name, address))
        created = name not in self.links
        self.links[name] = "bridge"
        return created

    def delete_bridge(self, name: str) -> None:
        self.calls.append(("delete_bridge", name))
        self.links.pop(name, None)

    def create_tap(self, name: str, bridge: str, owner_uid: int) -> None:
        self.calls.append(("create_tap", name, bridge, owner_uid))
        self.links[name] = "tap"

    def rename_tap(self, name: str, new_name: str) -> None:
        self.calls.append(("rename_tap", name, new_name))
        self.links[new_name] = self.links.pop(name)

    def delete_tap(self, name: str) -> None:
        self.calls.append(("delete_tap", name))
        self.links.pop(name, None)

    def list_links(self, prefix: str) -> list[str]:
        self.calls.append(("list_links", prefix))
        return sorted(n for n in self.links if n.startswith(prefix))

    def ensure_nat(self, cidr: str, bridge: str) -> None:
        self.calls.append(("ensure_nat", cidr, bridge))

    def remove_nat(self, cidr: str, bridge: str) -> None:
        self.calls.append(("remove_nat", cidr, bridge))

    def host_routes(self) -> list[str]:
        self.calls.append(("host_routes",))
        return list(self.routes)


@pytest.fixture
def resolv_conf(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text("# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53\n")
    return path


def make_driver(
    env: dict[str, str], ops: RecordingHostOps, resolv: Path, **config: Any
) -> tuple[BridgeNetwork, PluginContext]:
    ctx = dataclasses.replace(make_plugin_context(env, config), host_ops=ops, owner_uid=4242)
    return BridgeNetwork(ctx, resolv_conf_files=[resolv]), ctx


def request(**changes: str) -> NicRequest:
    base = NicRequest(vm_id=VM_ID, vm_name="web", mac="02:fc:00:00:00:07", guest_ip="172.16.0.7")
    return dataclasses.replace(base, **changes)


def test_setup_host_on_a_fresh_host(banger_env: dict[str, str], resolv_conf: Path) -> None:
    ops = RecordingHostOps(routes=["0.0.0.0/0", "10.0.0.0/8"])
    driver, _ = make_driver(banger_env, ops, resolv_conf)
    progress = RecordingProgress()

    driver.setup_host(progress)

    assert ops.calls == [
        ("host_routes",),
        ("ensure_bridge", "banger0", "172.16.0.1/24"),
        ("ensure_nat", "172.16.0.0/24", "banger0"),
        ("list_links", "bgrpool"),
        ("create_tap", "bgrpool0", "banger0", 4242),
        ("create_tap", "bgrpool1", "banger0", 4242),
    ]
    assert progress.steps == ["setting up bridge banger0"]
    assert driver.dns_link() == ("banger0", "172.16.0.1")  # the .vm DNS server listens on the bridge


def test_setup_host_again_creates_nothing_and_shrinks_the_pool(banger_env: dict[str, str], resolv_conf: Path) -> None:
    ops = RecordingHostOps(links={"banger0": "bridge", "bgrpool0": "tap", "bgrpool1": "tap", "bgrpool2": "tap"})
    driver, _ = make_driver(banger_env, ops, resolv_conf)

    driver.setup_host(RecordingProgress())

    assert [c for c in ops.calls if c[0] in ("create_tap", "delete_tap")] == [("delete_tap", "bgrpool2")]


def test_an_overlapping_route_stops_setup_before_any_change(banger_env: dict[str, str], resolv_conf: Path) -> None:
    ops = RecordingHostOps(routes=["0.0.0.0/0", "172.16.0.0/16"])
    driver, _ = make_driver(banger_env, ops, resolv_conf)

    with pytest.raises(BridgeError) as caught:
        driver.setup_host(RecordingProgress())

    assert str(caught.value) == (
        "cidr 172.16.0.0/24 overlaps the host route 172.16.0.0/16: "
        "set cidr and bridge_ip in config.toml to a subnet the host does not use"
    )
    assert ops.calls == [("host_routes",)]


def test_attach_renames_a_spare_tap(banger_env: dict[str, str], resolv_conf: Path) -> None:
    ops = RecordingHostOps(links={"banger0": "bridge", "bgrpool0": "tap", "bgrpool1": "tap"})
    driver, _ = make_driver(banger_env, ops, resolv_conf)

    attachment = driver.attach(request(mac="02:FC:00:00:00:07"))

    assert ops.calls == [("list_links", TAP), ("list_links", "bgrpool"), ("rename_tap", "bgrpool0", TAP)]
    assert attachment.backend == "bridge"
    assert (attachment.nic.kind, attachment.nic.mac, attachment.nic.tap_name) == ("tap", "02:fc:00:00:00:07", TAP)
    assert dataclasses.astuple(attachment.guest) == ("172.16.0.7", 24, "172.16.0.1", "192.0.2.53")
    assert (attachment.ssh_host, attachment.ssh_port, attachment.dns_address) == ("172.16.0.7", 22, "172.16.0.7")
    assert dict(attachment.state) == {"tap": TAP}


def test_attach_creates_a_tap_when_the_pool_is_empty(banger_env: dict[str, str], resolv_conf: Path) -> None:
    ops = RecordingHostOps(links={"banger0": "bridge"})
    driver, _ = make_driver(banger_env, ops, resolv_conf)

    driver.attach(request())

    assert ops.calls[-1] == ("create_tap", TAP, "banger0", 4242)


def test_attach_creates_a_tap_when_the_spare_vanished(banger_env: dict[str, str], resolv_conf: Path) -> None:
    class VanishingSpares(RecordingHostOps):
        def rename_tap(self, name: str, new_name: str) -> None:
            self.calls.append(("rename_tap", name, new_name))
            raise RuntimeError(f"tap {name} does not exist")

    ops = VanishingSpares(links={"banger0": "bridge", "bgrpool0": "tap"})
    driver, _ = make_driver(banger_env, ops, resolv_conf)

    assert driver.attach(request()).nic.tap_name == TAP
    assert ops.calls[-2:] == [("rename_tap", "bgrpool0", TAP), ("create_tap", TAP, "banger0", 4242)]


def test_attach_reuses_a_tap_left_by_a_crash(banger_env: dict[str, str], resolv_conf: Path) -> None:
    ops = RecordingHostOps(links={"banger0": "bridge", TAP: "tap", "bgrpool0": "tap"})
    driver, _ = make_driver(banger_env, ops, resolv_conf)

    driver.attach(request())

    assert ops.calls == [("list_links", TAP), ("create_tap", TAP, "banger0", 4242)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vm_id": "../../etc"}, "invalid VM id"),
        ({"vm_id": "ABCDEF"}, "invalid VM id"),
        ({"mac": "02:fc:00:00:00"}, "invalid MAC address"),
        ({"guest_ip": "10.0.0.7"}, "not a free host address in 172.16.0.0/24"),
        ({"guest_ip": "172.16.0.1"}, "not a free host address"),
        ({"guest_ip": "172.16.0.255"}, "not a free host address"),
        ({"guest_ip": "web"}, "invalid guest IP"),
    ],
)
def test_attach_rejects_bad_requests_before_any_call(
    banger_env: dict[str, str], resolv_conf: Path, changes: dict[str, str], message: str
) -> None:
    ops = RecordingHostOps(links={"banger0": "bridge", "bgrpool0": "tap"})
    driver, _ = make_driver(banger_env, ops, resolv_conf)

    with pytest.raises(ValueError, match=message):
        driver.attach(request(**changes))

    assert ops.calls == []


def test_guest_dns_from_config_or_falls_back_to_the_bridge(
    banger_env: dict[str, str], resolv_conf: Path, tmp_path: Path
) -> None:
    ops = RecordingHostOps(links={"banger0": "bridge"})
    configured, _ = make_driver(banger_env, ops, resolv_conf, guest_dns="198.51.100.53")
    assert configured.attach(request()).guest.dns == "198.51.100.53"

    stub_only = tmp_path / "stub.conf"
    stub_only.write_text("nameserver 127.0.0.53\n")
    fallback, _ = make_driver(banger_env, ops, stub_only)
    assert fallback.attach(request()).guest.dns == "172.16.0.1"
    progress = RecordingProgress()
    fallback.setup_host(progress)
    assert any("set guest_dns in config.toml" in line for line in progress.lines)


def test_detach_deletes_the_tap_and_refills_the_pool(banger_env: dict[str, str], resolv_conf: Path) -> None:
    ops = RecordingHostOps(links={"banger0": "bridge", "bgrpool1": "tap"})
    driver, _ = make_driver(banger_env, ops, resolv_conf)
    attachment = driver.attach(request())
    ops.calls.clear()

    driver.detach(attachment)

    assert ops.calls == [
        ("delete_tap", TAP),
        ("list_links", "bgrpool"),
        ("create_tap", "bgrpool0", "banger0", 4242),
        ("create_tap", "bgrpool1", "banger0", 4242),
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cidr": "172.16.0.0/33"}, "cidr '172.16.0.0/33' is not an IPv4 network"),
        ({"bridge_ip": "10.0.0.1"}, "bridge_ip 10.0.0.1 is not a usable address in cidr 172.16.0.0/24"),
        ({"bridge_ip": "172.16.0.0"}, "bridge_ip 172.16.0.0 is not a usable address"),
        ({"bridge_name": "br0"}, "bridge_name 'br0' must start with 'banger'"),
        ({"bridge_name": "banger-way-too-long"}, "at most 15 characters"),
        ({"tap_pool_size": -1}, "tap_pool_size must be between 0 and 64"),
        ({"guest_dns": "dns.google"}, "guest_dns 'dns.google' is not an IPv4 address"),
    ],
)
def test_inconsistent_config_is_a_clear_error(
    banger_env: dict[str, str], resolv_conf: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(BridgeError, match=message):
        make_driver(banger_env, RecordingHostOps(), resolv_conf, **config)


def test_tap_names_fit_the_kernel_limit() -> None:
    assert tap_name_for(VM_ID) == TAP
    assert len(tap_name_for("f" * 64)) == 15
    assert tap_name_for("abc") == "bgrabc"


def test_upstream_nameserver_skips_what_a_guest_cannot_reach(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "nameserver 127.0.0.53\nnameserver ::1\nnameserver 169.254.169.254\n"
        "nameserver 172.16.0.9\nnameserver bogus\nsearch example\nnameserver 192.0.2.1\n"
    )
    cidr = ipaddress.IPv4Network("172.16.0.0/24")

    assert upstream_nameserver([missing, conf], cidr) == "192.0.2.1"
    assert upstream_nameserver([missing], cidr) is None


def test_registered_as_the_bridge_network_backend(plugin_manager: PluginManager, plugin_context: PluginContext) -> None:
    provided = plugin_manager.network_backends()["bridge"]

    assert provided.plugin.dist == "banger-bridge"
    assert isinstance(provided.value.factory(plugin_context), BridgeNetwork)


def test_doctor_row_says_what_bridge_networking_lacks(
    plugin_context: PluginContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from banger_bridge import plugin

    (check,) = plugin.banger_doctor_checks()
    monkeypatch.setattr(plugin.os, "geteuid", lambda: 0)
    monkeypatch.setattr(plugin, "TUN_DEVICE", tmp_path / "tun")
    rows = list(check.run(plugin_context))
    assert [(r.status, r.summary, r.hint) for r in rows] == [
        ("warn", f"{tmp_path / 'tun'} is missing (VM taps)", "load the tun module: modprobe tun")
    ]

    (tmp_path / "tun").touch()
    assert [r.status for r in check.run(plugin_context)] == ["ok"]

    monkeypatch.setattr(plugin.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("BANGER_ROOT_HELPER", str(tmp_path / "no-helper.sock"))
    assert [r.status for r in check.run(plugin_context)] == ["info"]
    with socket.socket(socket.AF_UNIX) as listening:  # an owner daemon's helper: a real socket file
        listening.bind(str(tmp_path / "helper.sock"))
        monkeypatch.setenv("BANGER_ROOT_HELPER", str(tmp_path / "helper.sock"))
        assert [(r.status, r.summary) for r in check.run(plugin_context)] == [
            ("ok", f"not root: bangerd-root ({tmp_path / 'helper.sock'}) sets up bridge networking")
        ]
