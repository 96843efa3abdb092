"""Plugin loading: builtins through entry points, broken plugins survive, env switches."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from banger_core.common.plugins import BUILTIN_DISTRIBUTIONS, PluginError, get_plugin_manager
from banger_core.testing import FakeSite, invoke_cli

pytestmark = pytest.mark.builtins

BUILTINS = {
    "catalog",
    "debootstrap",
    "debian",
    "qemu",
    "firecracker",
    "bridge",
    "usernet",
    "resolved",
    "git",
    "oci",
    "register",
    "updater",
}


def _listing(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    result = invoke_cli(["plugins", "list", "--json", *args], env)
    assert result.exit_code == 0, result.output
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def test_all_builtins_are_active_and_listed_with_their_hooks(banger_env: dict[str, str]) -> None:
    rows = {r["name"]: r for r in _listing(banger_env)}
    assert set(rows) >= BUILTINS
    for name in BUILTINS:
        row = rows[name]
        assert row["status"] == "active" and row["source"] == "builtin", row
        assert row["version"] == "0.1.0" and row["hooks"], row
        assert all(not str(h).startswith("banger_") for h in row["hooks"])  # type: ignore[attr-defined]
    assert set(rows["core"]) >= {"name", "version", "source", "status", "hooks"}


def test_table_has_the_documented_columns(banger_env: dict[str, str]) -> None:
    result = invoke_cli(["plugins", "list"], banger_env)
    header = result.stdout.splitlines()[0].split()
    assert header == ["Name", "Version", "Source", "Status", "Hooks"]


def test_hook_filter(banger_env: dict[str, str]) -> None:
    names = {r["name"] for r in _listing(banger_env, "--hook", "vmm_backends")}
    assert names == {r["name"] for r in _listing(banger_env, "--hook", "banger_vmm_backends")}
    assert all("vmm_backends" in r["hooks"] for r in _listing(banger_env, "--hook", "vmm_backends"))  # type: ignore[operator]
    bad = invoke_cli(["plugins", "list", "--hook", "nope"], banger_env)
    assert bad.exit_code == 2 and "unknown hook 'nope'" in bad.stderr


def test_broken_plugin_is_listed_failed_and_everything_else_works(
    banger_site: FakeSite, banger_env: dict[str, str]
) -> None:
    banger_site.add_plugin("broken", "broken-banger", "0.9", source="import no_such_module_anywhere\n")
    result = invoke_cli(["plugins", "list", "--json"], banger_env)
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["source"] == "external"
    assert rows["broken"]["error"] == "ModuleNotFoundError: No module named 'no_such_module_anywhere'"
    line = (
        "Error while loading banger plugin broken (broken-banger 0.9): "
        "ModuleNotFoundError: No module named 'no_such_module_anywhere'"
    )
    assert result.stderr.strip() == line  # no traceback without -v
    assert {n for n, r in rows.items() if r["status"] == "active"} >= BUILTINS
    # Every other command still works.
    for args in (["--help"], ["config", "show"], ["doctor", "--json"]):
        other = invoke_cli(args, banger_env)
        assert other.exit_code in (0, 1) and line in other.stderr, args
        assert "Traceback" not in other.stderr
    assert invoke_cli(["version"], banger_env).exit_code == 0  # loads no plugins at all
    verbose = invoke_cli(["-v", "plugins", "list"], banger_env)
    assert "Traceback (most recent call last)" in verbose.stderr


def test_unknown_hook_and_bad_signature_fail_the_plugin_only(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    banger_site.add_plugin(
        "future",
        "future-banger",
        source="""
from banger_hookspecs import hookimpl
@hookimpl
def banger_teleport_vm():
    return []
""",
    )
    banger_site.add_plugin(
        "wrongargs",
        "wrongargs-banger",
        source="""
from banger_hookspecs import hookimpl
@hookimpl
def banger_vm_created(vm, extra):
    pass
""",
    )
    pm = get_plugin_manager(banger_env)
    future, wrong = pm.records["future"], pm.records["wrongargs"]
    assert future.status == "failed" and "unknown hook banger_teleport_vm" in (future.error or "")
    assert wrong.status == "failed" and "extra" in (wrong.error or "")
    # Their hooks are not registered.
    assert not pm.pm.hook.banger_vm_created.get_hookimpls()


def test_registration_that_raises_marks_the_plugin_failed(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    banger_site.add_plugin(
        "badname",
        "badname-banger",
        source="""
from banger_hookspecs import hookimpl, VmmBackend
@hookimpl
def banger_vmm_backends():
    return [VmmBackend(name="Not Valid", description="", factory=lambda ctx: None)]
""",
    )
    pm = get_plugin_manager(banger_env)
    assert "Not Valid" not in pm.vmm_backends()
    assert "qemu" in pm.doctor_checks()
    record = pm.records["badname"]
    assert record.status == "failed"
    assert "invalid VMM backend name 'Not Valid'" in (record.error or "")


def test_disable_plugins_blocks_by_name(banger_env: dict[str, str]) -> None:
    env = {**banger_env, "BANGER_DISABLE_PLUGINS": "qemu, git"}
    rows = {r["name"]: r for r in _listing(env)}
    assert rows["qemu"]["status"] == "blocked" and rows["git"]["status"] == "blocked"
    assert rows["firecracker"]["status"] == "active"
    pm = get_plugin_manager(env)
    assert "qemu" not in pm.doctor_checks()


def test_no_plugins_loads_only_the_core(banger_env: dict[str, str]) -> None:
    env = {**banger_env, "BANGER_NO_PLUGINS": "1"}
    rows = _listing(env)
    active = {r["name"] for r in rows if r["status"] == "active"}
    assert active == {"core"}
    assert {r["name"] for r in rows if r["status"] == "blocked"} >= BUILTINS
    pm = get_plugin_manager(env)
    assert set(pm.dns_routers()) == {"manual"}


def test_unknown_provider_name_lists_known_ones(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    env = {**banger_env, "BANGER_NO_PLUGINS": "1"}
    with pytest.raises(PluginError, match=r"^unknown VMM backend 'xen' \(known: none installed\)$"):
        get_plugin_manager(env).vmm_backends().require("xen")
    with pytest.raises(PluginError, match=r"^unknown DNS router 'xen' \(known: manual\)$"):
        get_plugin_manager(env).dns_routers().require("xen")


def test_every_plugin_distribution_in_the_tree_is_a_builtin() -> None:
    """A plugin shipped under plugins/ shows as ``builtin``; one missing here would list as ``external``."""
    root = Path(__file__).resolve().parents[2]
    shipped = {tomllib.loads(p.read_text())["project"]["name"] for p in (root / "plugins").glob("*/pyproject.toml")}
    assert shipped and shipped | {"banger"} == set(BUILTIN_DISTRIBUTIONS)


#: Modules a plugin's entry point must not import: every CLI command that loads plugins (`--help`,
#: completion, `plugins list`) would pay for them. Factories import what their drivers need.
HEAVY_AT_REGISTRATION = ("asyncio", "httpx", "pyroute2", "zstandard", "sqlmodel", "pydantic", "rich")


@pytest.mark.builtins
def test_registering_a_builtin_plugin_imports_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "for ep in entry_points(group='banger'):\n"
        "    before = set(sys.modules)\n"
        "    ep.load()\n"
        f"    heavy = sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & set({HEAVY_AT_REGISTRATION!r}))\n"
        "    print(ep.dist.name, ','.join(heavy) or '-')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    loaded = dict(line.split() for line in out.stdout.splitlines())
    assert set(loaded) >= set(BUILTIN_DISTRIBUTIONS) - {"banger"}
    assert {dist: heavy for dist, heavy in loaded.items() if heavy != "-"} == {}
