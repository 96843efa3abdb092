"""Unit tests: availability per host kind, ``auto`` choosing between the installed VMM backends, doctor rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from banger_firecracker.driver import PREFERENCE, FirecrackerDriver
from banger_firecracker.plugin import banger_doctor_checks
from banger_hookspecs import HostFacts, PluginContext

pytestmark = pytest.mark.unit

KINDS = ("hardware", "software", "unusable", "absent")


def fake_binary(directory: Path, name: str, version: str) -> Path:
    """An executable that prints ``--version`` output like Firecracker's (the only call availability makes)."""
    path = directory / name
    path.write_text(f"#!/bin/sh\necho 'Firecracker {version}'\n")
    path.chmod(0o755)
    return path


def context(base: PluginContext, kvm: str, **config: object) -> PluginContext:
    host = HostFacts(kvm=kvm, kvm_detail=f"kvm is {kvm}", tsc_khz=2_000_000, cpus=2, memory_mib=4096)  # type: ignore[arg-type]
    return dataclasses.replace(base, host=host, config={**base.config, **config})


@pytest.mark.parametrize("kvm", KINDS)
def test_firecracker_needs_hardware_kvm(plugin_context: PluginContext, tmp_path: Path, kvm: str) -> None:
    binary = fake_binary(tmp_path, "firecracker", "v1.12.1")
    found = FirecrackerDriver(context(plugin_context, kvm, firecracker_bin=binary)).availability()
    assert found.version == "v1.12.1"
    if kvm == "hardware":
        assert (found.usable, found.preference, found.reason) == (
            True,
            PREFERENCE,
            "Firecracker v1.12.1 with hardware KVM",
        )
    else:
        assert (found.usable, found.preference) == (False, 0)
        assert found.reason == f"Firecracker needs hardware KVM: kvm is {kvm}"


def test_versions(plugin_context: PluginContext, tmp_path: Path) -> None:
    old = FirecrackerDriver(context(plugin_context, "hardware", firecracker_bin=fake_binary(tmp_path, "old", "v1.4.1")))
    assert old.availability().usable is False
    assert old.availability().reason == "Firecracker v1.4.1 is older than v1.5"
    newer = FirecrackerDriver(
        context(plugin_context, "hardware", firecracker_bin=fake_binary(tmp_path, "new", "v1.13.0"))
    )
    assert newer.availability().usable is True
    assert newer.availability().reason == "Firecracker v1.13.0 with hardware KVM (tested with v1.12.x)"


def test_missing_binary(plugin_context: PluginContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    found = FirecrackerDriver(context(plugin_context, "hardware")).availability()
    assert (found.usable, found.reason) == (False, "firecracker not found (install Firecracker's official release)")


def test_jailer_required_when_configured(plugin_context: PluginContext, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    binary = fake_binary(tmp_path, "firecracker", "v1.12.1")
    found = FirecrackerDriver(
        context(plugin_context, "hardware", firecracker_bin=binary, use_jailer=True)
    ).availability()
    assert (found.usable, found.reason) == (False, "use_jailer is set but jailer is not found")


@pytest.mark.parametrize("kvm", KINDS)
def test_auto_picks_firecracker_only_with_hardware_kvm(
    plugin_manager, plugin_context, tmp_path: Path, kvm: str
) -> None:
    """Through the real plugin manager: both builtin backends, ``auto`` = the highest usable preference."""
    ctx = context(plugin_context, kvm, firecracker_bin=fake_binary(tmp_path, "firecracker", "v1.12.1"))
    backends = plugin_manager.vmm_backends()
    if "qemu" not in backends:
        pytest.skip("a cross-plugin check: needs banger-qemu installed too (the full suite has it)")
    found = {name: provided.value.factory(ctx).availability() for name, provided in backends.items()}
    assert {"firecracker", "qemu"} <= set(found)
    usable = {name: a.preference for name, a in found.items() if a.usable}
    assert max(usable, key=lambda name: usable[name]) == ("firecracker" if kvm == "hardware" else "qemu")


def _rows(ctx: PluginContext) -> list[tuple[str, str, str]]:
    (check,) = banger_doctor_checks()
    return [(row.name, row.status, row.summary) for row in check.run(ctx)]


def test_doctor_rows(plugin_context: PluginContext, tmp_path: Path) -> None:
    fc = fake_binary(tmp_path, "firecracker", "v1.12.1")
    assert _rows(context(plugin_context, "hardware", firecracker_bin=fc)) == [
        ("firecracker", "ok", f"Firecracker v1.12.1 at {fc}")
    ]
    assert _rows(context(plugin_context, "software", firecracker_bin=fc))[1] == (
        "firecracker-kvm",
        "info",
        "Firecracker needs hardware KVM, which this host lacks: auto picks QEMU",
    )
    old_jailer = fake_binary(tmp_path, "jailer", "v1.11.0")
    rows = _rows(context(plugin_context, "hardware", firecracker_bin=fc, use_jailer=True, jailer_bin=old_jailer))
    assert rows[-1] == ("jailer", "warn", f"jailer at {old_jailer} reports v1.11.0, Firecracker is v1.12.1")


def test_launch_refuses_a_too_old_firecracker(plugin_context: PluginContext, tmp_path: Path, make_spec) -> None:
    from banger_core.testing import RecordingProgress
    from banger_firecracker.driver import FirecrackerLaunchError

    old = fake_binary(tmp_path, "firecracker", "v1.4.1")
    driver = FirecrackerDriver(context(plugin_context, "hardware", firecracker_bin=old))
    with pytest.raises(FirecrackerLaunchError, match=r"reports v1\.4\.1; banger needs Firecracker v1\.5 or later$"):
        driver.launch(make_spec(), RecordingProgress())
