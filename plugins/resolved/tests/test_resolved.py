"""The resolved DNS router, checked at the process boundary.

systemd-resolved does not run on the test machines, so a recording fake
``resolvectl`` placed first on PATH logs each argv (one JSON list a line) and
exits as told; the tests assert the exact calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from banger_core.common.plugins import PluginManager
from banger_resolved.router import ResolvedError, ResolvedRouter

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


@pytest.fixture
def router(tmp_path: Path) -> ResolvedRouter:
    return ResolvedRouter(runtime=tmp_path / "resolve")


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

    with pytest.raises(ResolvedError) as caught:
        router.route("banger0", "172.16.0.1", "vm")

    assert str(caught.value) == (
        "`resolvectl dns banger0 172.16.0.1` failed: Failed to set DNS configuration: "
        "Unit dbus-org.freedesktop.resolve1.service not found.: check `systemctl status systemd-resolved`, "
        'or set dns_router = "manual"'
    )
    assert resolvectl.calls() == [["dns", "banger0", "172.16.0.1"]]


def test_a_missing_resolvectl_is_a_clear_error(router: ResolvedRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(ResolvedError, match=r"^cannot run `resolvectl dns banger0 172.16.0.1`: resolvectl not found"):
        router.route("banger0", "172.16.0.1", "vm")


@pytest.mark.parametrize(
    ("link", "server", "domain", "message"),
    [
        ("banger0; reboot", "172.16.0.1", "vm", "invalid link name"),
        ("a-link-name-too-long", "172.16.0.1", "vm", "invalid link name"),
        ("banger0", "dns.example.com", "vm", "invalid DNS server"),
        ("banger0", "fe80::1", "vm", "invalid DNS server"),
        ("banger0", "172.16.0.1:0", "vm", "port must be between 1 and 65535"),
        ("banger0", "172.16.0.1:53x", "vm", "port must be between 1 and 65535"),
        ("banger0", "172.16.0.1", "~vm", "invalid domain"),
        ("banger0", "172.16.0.1", "vm.", "invalid domain"),
        ("banger0", "172.16.0.1", "-vm", "invalid domain"),
    ],
)
def test_bad_arguments_never_reach_resolvectl(
    router: ResolvedRouter, resolvectl: FakeResolvectl, link: str, server: str, domain: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        router.route(link, server, domain)

    assert resolvectl.calls() == []


def test_detect_needs_the_running_service_and_the_tool(
    tmp_path: Path, resolvectl: FakeResolvectl, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "resolve"
    router = ResolvedRouter(runtime=runtime)
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


def test_registered_as_the_resolved_dns_router(plugin_manager: PluginManager) -> None:
    provided = plugin_manager.dns_routers()["resolved"]

    assert provided.plugin.dist == "banger-resolved"
    assert isinstance(provided.value.factory(None), ResolvedRouter)
