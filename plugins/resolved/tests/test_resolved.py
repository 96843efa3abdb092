"""The resolved DNS router and the root side it asks (``HostOps.route_dns``), checked at the process boundary.

systemd-resolved does not run on the test machines, so a recording fake
``resolvectl`` placed first on PATH logs each argv (one JSON list a line) and
exits as told; the tests assert the exact calls. The host ops are a root
daemon's own (:class:`NetlinkHostOps`, which only runs ``resolvectl`` here);
the same calls through ``bangerd-root`` are in
``tests/integration/test_root_helper_dns.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from banger_core.common.context import UnprivilegedHostOps
from banger_core.common.errors import HostOpError, NotPrivileged
from banger_core.common.plugins import PluginManager
from banger_core.host.netops import NetlinkHostOps
from banger_hookspecs import PluginContext
from banger_resolved.router import ResolvedRouter

pytestmark = pytest.mark.unit

FAKE_RESOLVECTL = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_RESOLVECTL_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_RESOLVECTL_FAIL"):
    sys.stderr.write(os.environ["FAKE_RESOLVECTL_FAIL"] + "\\n")
    sys.exit(1)
"""


class FakeResolvectl:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        script = bin_dir / "resolvectl"
        script.write_text(FAKE_RESOLVECTL)
        script.chmod(0o755)
        self.log = tmp_path / "resolvectl.log"
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
        monkeypatch.setenv("FAKE_RESOLVECTL_LOG", str(self.log))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def fail_with(self, message: str) -> None:
        self.monkeypatch.setenv("FAKE_RESOLVECTL_FAIL", message)


@pytest.fixture
def resolvectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeResolvectl:
    return FakeResolvectl(tmp_path, monkeypatch)


ROOT_OPS_CONFIG = {"cidr": "172.16.0.0/24", "bridge_ip": "172.16.0.1", "bridge_name": "banger0"}


@pytest.fixture
def router(tmp_path: Path) -> ResolvedRouter:
    return ResolvedRouter(NetlinkHostOps(ROOT_OPS_CONFIG), runtime=tmp_path / "resolve")


def test_route_sets_server_routing_domain_and_plain_dns_on_the_link_only(
    router: ResolvedRouter, resolvectl: FakeResolvectl
) -> None:
    router.route("banger0", "172.16.0.1", "vm")

    assert resolvectl.calls() == [
        ["dns", "banger0", "172.16.0.1"],
        ["domain", "banger0", "~vm"],
        ["default-route", "banger0", "false"],
        ["dnssec", "banger0", "no"],
        ["dnsovertls", "banger0", "no"],
    ]


def test_route_passes_a_non_default_port_in_resolvectl_syntax(
    router: ResolvedRouter, resolvectl: FakeResolvectl
) -> None:
    router.route("banger0", "172.16.0.1:5353", "vm")

    assert resolvectl.calls()[0] == ["dns", "banger0", "172.16.0.1:5353"]


def test_a_failing_resolvectl_stops_and_says_what_to_do(router: ResolvedRouter, resolvectl: FakeResolvectl) -> None:
    resolvectl.fail_with("Failed to set DNS configuration: Unit dbus-org.freedesktop.resolve1.service not found.")

    with pytest.raises(HostOpError) as caught:
        router.route("banger0", "172.16.0.1", "vm")

    assert str(caught.value) == (
        "`resolvectl dns banger0 172.16.0.1` failed: Failed to set DNS configuration: "
        "Unit dbus-org.freedesktop.resolve1.service not found.: check `systemctl status systemd-resolved`, "
        'or set dns_router = "manual"'
    )
    assert resolvectl.calls() == [["dns", "banger0", "172.16.0.1"]]


def test_a_missing_resolvectl_is_a_clear_error(router: ResolvedRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(HostOpError, match=r"^cannot run `resolvectl dns banger0 172.16.0.1`: resolvectl not found"):
        router.route("banger0", "172.16.0.1", "vm")


@pytest.mark.parametrize(
    ("link", "server", "domain", "message"),
    [
        ("banger0; reboot", "172.16.0.1", "vm", "invalid link name 'banger0; reboot': use 1-15 characters"),
        ("../x", "172.16.0.1", "vm", "invalid link name '../x': use 1-15 characters"),
        ("eth0", "172.16.0.1", "vm", "invalid link name 'eth0': banger only manages links whose names start with"),
        ("bangerother", "172.16.0.1", "vm", "link 'bangerother' is not banger's bridge 'banger0'"),
        ("banger0", "dns.example.com", "vm", "DNS server 'dns.example.com' is not an IPv4 address"),
        ("banger0", "fe80::1", "vm", "DNS server 'fe80' is not an IPv4 address"),
        ("banger0", "1.1.1.1", "vm", "DNS server 1.1.1.1 is not a usable address inside cidr 172.16.0.0/24"),
        ("banger0", "172.16.0.2", "vm", "DNS server '172.16.0.2' is not the bridge address 172.16.0.1"),
        ("banger0", "172.16.0.1:0", "vm", "DNS server '172.16.0.1:0': the port must be between 1 and 65535"),
        ("banger0", "172.16.0.1:53x", "vm", "DNS server '172.16.0.1:53x': the port must be"),
        ("banger0", "172.16.0.1", "com", "domain 'com' is not 'vm'"),
        ("banger0", "172.16.0.1", "~vm", "domain '~vm' is not 'vm'"),
        ("banger0", "172.16.0.1", "../x", "domain '../x' is not 'vm'"),
    ],
)
def test_hostile_arguments_never_reach_resolvectl(
    router: ResolvedRouter, resolvectl: FakeResolvectl, link: str, server: str, domain: str, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        router.route(link, server, domain)

    assert str(caught.value).startswith(message)
    assert resolvectl.calls() == []


def test_without_privilege_the_route_is_refused_in_one_line_and_nothing_runs(
    tmp_path: Path, resolvectl: FakeResolvectl
) -> None:
    router = ResolvedRouter(UnprivilegedHostOps(), runtime=tmp_path / "resolve")

    with pytest.raises(NotPrivileged) as caught:
        router.route("banger0", "172.16.0.1", "vm")

    assert str(caught.value) == (
        "routing *.vm to 172.16.0.1 on banger0 needs root: run the daemon as root, start the root helper "
        '(`sudo banger system install --owner $USER`), or use network_backend = "usernet"'
    )
    assert resolvectl.calls() == []


def test_detect_needs_the_running_service_and_the_tool(
    tmp_path: Path, resolvectl: FakeResolvectl, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "resolve"
    router = ResolvedRouter(UnprivilegedHostOps(), runtime=runtime)
    assert router.detect() is False  # resolvectl installed, service not running

    runtime.mkdir()
    (runtime / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    assert router.detect() is True

    monkeypatch.setenv("PATH", "/nonexistent")
    assert router.detect() is False
    assert resolvectl.calls() == []


def test_instructions_name_the_commands(router: ResolvedRouter) -> None:
    text = router.instructions("banger0", "172.16.0.1", "vm")

    assert "resolvectl dns banger0 172.16.0.1; resolvectl domain banger0 ~vm" in text
    assert "resolvectl revert banger0" in text


def test_registered_as_the_resolved_dns_router(plugin_manager: PluginManager, plugin_context: PluginContext) -> None:
    provided = plugin_manager.dns_routers()["resolved"]

    assert provided.plugin.dist == "banger-resolved"
    router = provided.value.factory(plugin_context)
    assert isinstance(router, ResolvedRouter) and router.host_ops is plugin_context.host_ops
