"""usernet: loopback-only forwards, fixed slirp guest config, nothing on the host."""

from __future__ import annotations

import dataclasses
import shutil
import socket
from pathlib import Path

import pytest

from banger_core.common.plugins import get_plugin_manager
from banger_hookspecs import NicRequest, PluginContext
from banger_usernet.driver import SLIRP_GUEST, UsernetDriver, free_loopback_port
from banger_usernet.plugin import _check


def test_registered_through_the_entry_point(banger_env: dict[str, str]) -> None:
    provided = get_plugin_manager(banger_env).network_backends().require("usernet")
    assert provided.plugin.dist == "banger-usernet" and provided.plugin.source == "builtin"


def test_attach_forwards_ssh_on_loopback_only(plugin_context: PluginContext) -> None:
    driver = UsernetDriver(plugin_context)
    a = driver.attach(NicRequest(vm_id="ab12", vm_name="vm-a", mac="52:54:00:00:00:01", guest_ip="172.16.0.2"))
    b = driver.attach(NicRequest(vm_id="cd34", vm_name="vm-b", mac="52:54:00:00:00:02", guest_ip="172.16.0.3"))
    assert a.nic.kind == "user" and a.nic.mac == "52:54:00:00:00:01" and a.nic.tap_name is None
    (forward,) = a.nic.forwards
    assert forward.host_address == "127.0.0.1" and forward.guest_port == 22 and forward.protocol == "tcp"
    assert (a.ssh_host, a.ssh_port) == ("127.0.0.1", forward.host_port)
    assert a.ssh_port != b.ssh_port
    assert a.guest == SLIRP_GUEST and a.dns_address is None
    assert a.state == {"ssh_port": str(a.ssh_port)}
    assert driver.dns_link() is None
    assert a.nic.host_access is False, "isolated unless the VM asked for host access"


def test_host_access_request_reaches_the_nic(plugin_context: PluginContext) -> None:
    request = NicRequest(vm_id="ab12", vm_name="vm-a", mac="52:54:00:00:00:01", guest_ip="", host_access=True)
    assert UsernetDriver(plugin_context).attach(request).nic.host_access is True


def test_free_loopback_port_is_bindable() -> None:
    port = free_loopback_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_doctor_says_to_install_passt_when_it_is_missing(
    plugin_context: PluginContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (result,) = _check(plugin_context)
    assert result.status == "warn"
    assert result.hint == "install passt for guest internet without host-loopback access: apt-get install passt"

    (tmp_path / "passt").symlink_to(shutil.which("passt", path="/usr/bin:/bin") or "/usr/bin/passt")
    (result,) = _check(plugin_context)
    assert result.status == "ok"
    assert "internet egress through passt but not the host's 127.0.0.1" in result.summary


def test_usernet_egress_false_asks_for_a_nic_that_opens_no_connection(
    plugin_context: PluginContext, banger_env: dict[str, str]
) -> None:
    request = NicRequest(vm_id="ab12", vm_name="vm-a", mac="52:54:00:00:00:01", guest_ip="")
    assert UsernetDriver(plugin_context).attach(request).nic.egress is True  # the default
    closed = dataclasses.replace(plugin_context, config={**plugin_context.config, "usernet_egress": False})
    assert UsernetDriver(closed).attach(request).nic.egress is False
    (result,) = _check(closed)
    assert result.status == "ok" and "guests open no outbound connection" in result.summary
    # The key is declared, so config.toml may set it.
    option = get_plugin_manager(banger_env).config_options()["usernet_egress"]
    assert option.plugin.name == "usernet" and option.value.type == "bool"
