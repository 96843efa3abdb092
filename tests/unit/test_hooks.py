"""One test per hook: a third-party plugin installed like `pip install` would is used by the core."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from banger_core.common.config import load_config
from banger_core.common.plugins import (
    ARTIFACT_PUBLISHERS,
    DNS_ROUTERS,
    IMAGE_SOURCES,
    KERNEL_PROVIDERS,
    NETWORK_BACKENDS,
    VMM_BACKENDS,
    WORKSPACE_SYNCERS,
    PluginError,
    ProviderHook,
    get_plugin_manager,
)
from banger_core.testing import FakeSite, invoke_cli
from banger_hookspecs import VmInfo

PROVIDER_PLUGIN = """
from banger_hookspecs import hookimpl, {cls}

@hookimpl
def {hook}():
    return [{cls}(name="{name}", description="from acme", factory=lambda ctx: ("driver", ctx))]
"""


def _provider_test(site: FakeSite, env: dict[str, str], hook: ProviderHook[object], name: str) -> None:
    source = PROVIDER_PLUGIN.format(cls=hook.registration.__name__, hook=hook.name, name=name)
    site.add_plugin("acme", "acme-banger", "2.0", source=source)
    pm = get_plugin_manager(env)
    provided = pm.providers(hook).require(name)
    assert provided.plugin.name == "acme" and provided.plugin.source == "external"
    assert provided.value.factory("ctx") == ("driver", "ctx")
    # The same name from a second distribution is an error naming both.
    site.add_plugin("other", "other-banger", "0.3", source=source)
    with pytest.raises(PluginError) as err:
        get_plugin_manager(env).providers(hook)
    message = str(err.value)
    assert "acme-banger 2.0" in message and "other-banger 0.3" in message and repr(name) in message


def test_banger_image_sources(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    _provider_test(banger_site, banger_env, IMAGE_SOURCES, "acme-images")


def test_banger_kernel_providers(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    _provider_test(banger_site, banger_env, KERNEL_PROVIDERS, "acme-kernels")


def test_banger_artifact_publishers(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    _provider_test(banger_site, banger_env, ARTIFACT_PUBLISHERS, "acme-publish")


def test_banger_vmm_backends(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    _provider_test(banger_site, banger_env, VMM_BACKENDS, "acme-vmm")


def test_banger_network_backends(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    _provider_test(banger_site, banger_env, NETWORK_BACKENDS, "acme-net")


def test_banger_dns_routers(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    _provider_test(banger_site, banger_env, DNS_ROUTERS, "acme-dns")
    # The core's own manual router is always there.
    assert "manual" in get_plugin_manager(banger_env, load_entry_points=False).dns_routers()


def test_banger_workspace_syncers(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    _provider_test(banger_site, banger_env, WORKSPACE_SYNCERS, "acme-sync")


def test_banger_doctor_checks(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    banger_site.add_plugin(
        "acme",
        "acme-banger",
        source="""
from banger_hookspecs import hookimpl, CheckResult, DoctorCheck

def broken(ctx):
    raise RuntimeError("cannot probe")

@hookimpl
def banger_doctor_checks():
    return [
        DoctorCheck(name="acme", run=lambda ctx: [CheckResult("acme-disk", "warn", "disk is small", hint="grow it")]),
        DoctorCheck(name="acme-broken", run=broken),
    ]
""",
    )
    result = invoke_cli(["doctor", "--json"], banger_env)
    rows = {row["name"]: row for row in json.loads(result.stdout)["checks"]}
    assert rows["acme-disk"]["status"] == "warn" and rows["acme-disk"]["hint"] == "grow it"
    assert rows["acme-disk"]["plugin"] == "acme"
    assert rows["acme-broken"]["status"] == "fail"
    assert "check crashed: RuntimeError: cannot probe" in rows["acme-broken"]["summary"]
    # Rows from the core come first.
    assert json.loads(result.stdout)["checks"][0]["plugin"] == "core"


def test_banger_config_options(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    banger_site.add_plugin(
        "acme",
        "acme-banger",
        source="""
from banger_hookspecs import hookimpl, ConfigOption

@hookimpl
def banger_config_options():
    return [ConfigOption("acme_level", "int", 3, help="how much acme"),
            ConfigOption("acme_home", "path", help="where acme lives")]
""",
    )
    config_file = Path(banger_env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text('acme_home = "~/acme"\n')
    config = load_config(get_plugin_manager(banger_env), banger_env)
    assert config["acme_level"] == 3 and config.sources["acme_level"] == "default"
    assert config["acme_home"] == Path(banger_env["HOME"]) / "acme"
    assert config.sources["acme_home"] == "~/.config/banger/config.toml"
    rows = {r["key"]: r for r in json.loads(invoke_cli(["config", "show", "--json"], banger_env).stdout)["settings"]}
    assert rows["acme_home"]["plugin"] == "acme" and rows["acme_level"]["value"] == 3
    config_file.write_text("acme_level = 'high'\n")
    result = invoke_cli(["config", "show"], banger_env)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "banger: error: ~/.config/banger/config.toml: key 'acme_level' must be an integer, got 'high'"
    )


def test_banger_cli_commands(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    banger_site.add_plugin(
        "acme",
        "acme-banger",
        source="""
import click
from banger_hookspecs import hookimpl

@hookimpl
def banger_cli_commands():
    @click.command(name="acme-hello", help="Say hello from acme.")
    @click.argument("who")
    def hello(who):
        click.echo(f"hello {who}")

    @click.command(name="doctor")
    def clash():
        click.echo("should never run")

    return [hello, clash]
""",
    )
    help_text = invoke_cli(["--help"], banger_env).stdout
    assert "acme-hello" in help_text and "Say hello from acme." in help_text
    result = invoke_cli(["acme-hello", "world"], banger_env)
    assert result.stdout == "hello world\n"
    assert "command 'doctor' clashes, ignored" in result.stderr
    doctor = invoke_cli(["doctor", "--json"], banger_env)
    assert "should never run" not in doctor.stdout


EVENT_PLUGIN = """
from banger_hookspecs import hookimpl
SEEN = []

@hookimpl
def {hook}(vm):
    SEEN.append(("{hook}", vm.name))
"""

VM = VmInfo(
    id="0123abcd",
    name="happy-otter",
    state="running",
    image="debian-bookworm",
    kernel="generic-6.1",
    backend="qemu",
    network="usernet",
    vcpus=2,
    memory_mib=1024,
    guest_ip="10.0.2.15",
)


def _event_test(site: FakeSite, env: dict[str, str], hook: str, caplog: pytest.LogCaptureFixture) -> None:
    module = site.add_plugin("acme", "acme-banger", source=EVENT_PLUGIN.format(hook=hook))
    site.add_plugin(
        "grumpy",
        "grumpy-banger",
        source=f"""
from banger_hookspecs import hookimpl
@hookimpl
def {hook}(vm):
    raise RuntimeError("grumpy")
""",
    )
    pm = get_plugin_manager(env)
    with caplog.at_level(logging.WARNING):
        errors = pm.call_event(hook, vm=VM)
    import sys

    assert [(hook, "happy-otter")] == sys.modules[module].SEEN
    assert errors == [f"plugin grumpy: {hook} raised: RuntimeError: grumpy"]
    assert "grumpy" in caplog.text


def test_banger_vm_created(banger_site: FakeSite, banger_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    _event_test(banger_site, banger_env, "banger_vm_created", caplog)


def test_banger_vm_started(banger_site: FakeSite, banger_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    _event_test(banger_site, banger_env, "banger_vm_started", caplog)


def test_banger_vm_stopped(banger_site: FakeSite, banger_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    _event_test(banger_site, banger_env, "banger_vm_stopped", caplog)


def test_banger_vm_deleted(banger_site: FakeSite, banger_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    _event_test(banger_site, banger_env, "banger_vm_deleted", caplog)
