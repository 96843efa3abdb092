"""Unit tests: what the qemu backend reports for ``auto`` selection on each kind of host."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from banger_hookspecs import HostFacts, PluginContext
from banger_qemu.driver import PREFERENCE_KVM, PREFERENCE_TCG, QemuDriver, resolve_accel
from banger_qemu.plugin import banger_doctor_checks, banger_vmm_backends
from banger_qemu.probe import SANDBOX, _probe_sandbox, _probe_version, qemu_version, sandbox_option

pytestmark = pytest.mark.unit


def context(base: PluginContext, kvm: str, **config: object) -> PluginContext:
    host = HostFacts(kvm=kvm, kvm_detail=f"kvm is {kvm}", tsc_khz=2_000_000, cpus=2, memory_mib=4096)  # type: ignore[arg-type]
    return dataclasses.replace(base, host=host, config={**base.config, **config})


@pytest.mark.parametrize(
    ("kvm", "usable", "preference", "accel"),
    [
        ("hardware", True, PREFERENCE_KVM, "kvm"),
        ("software", True, PREFERENCE_TCG, "tcg"),
        ("unusable", True, PREFERENCE_TCG, "tcg"),
        ("absent", True, PREFERENCE_TCG, "tcg"),
    ],
)
def test_auto_accel_per_kvm_kind(
    plugin_context: PluginContext, kvm: str, usable: bool, preference: int, accel: str
) -> None:
    driver = QemuDriver(context(plugin_context, kvm))
    found = driver.availability()
    assert (found.usable, found.preference, driver.accel) == (usable, preference, accel)
    assert found.version is not None and found.version.startswith("7.")
    assert ("hardware KVM" in found.reason) == (kvm == "hardware")


def test_forced_kvm_is_unusable_without_kvm(plugin_context: PluginContext) -> None:
    found = QemuDriver(context(plugin_context, "absent", qemu_accel="kvm")).availability()
    assert not found.usable
    assert found.reason == "qemu_accel = kvm but kvm is absent"


def test_forced_kvm_on_software_kvm_says_so(plugin_context: PluginContext) -> None:
    found = QemuDriver(context(plugin_context, "software", qemu_accel="kvm")).availability()
    assert found.usable and found.preference == PREFERENCE_TCG
    assert "software KVM" in found.reason


def test_forced_tcg_on_hardware_kvm(plugin_context: PluginContext) -> None:
    driver = QemuDriver(context(plugin_context, "hardware", qemu_accel="tcg"))
    assert driver.accel == "tcg"
    assert driver.availability().preference == PREFERENCE_TCG


def test_missing_binary_is_unusable(
    plugin_context: PluginContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    found = QemuDriver(context(plugin_context, "hardware")).availability()
    assert (found.usable, found.preference, found.version) == (False, 0, None)
    assert found.reason == "qemu-system-x86_64 not found: apt-get install qemu-system-x86"


def test_configured_binary_that_does_not_run(plugin_context: PluginContext, tmp_path: Path) -> None:
    found = QemuDriver(context(plugin_context, "hardware", qemu_bin=tmp_path / "qemu")).availability()
    assert not found.usable
    assert found.reason.startswith(f"{tmp_path}/qemu does not run")


def test_resolve_accel() -> None:
    assert [resolve_accel("auto", k) for k in ("hardware", "software", "unusable", "absent")] == [
        "kvm",
        "tcg",
        "tcg",
        "tcg",
    ]
    assert resolve_accel("kvm", "absent") == "kvm"


def test_backend_registration_builds_the_driver(plugin_context: PluginContext) -> None:
    (backend,) = banger_vmm_backends()
    assert backend.name == "qemu"
    assert isinstance(backend.factory(plugin_context), QemuDriver)


def test_version_probe_runs_a_binary_once_until_it_changes(tmp_path: Path) -> None:
    qemu = tmp_path / "qemu"
    runs = tmp_path / "runs"

    def install(version: str) -> None:
        partial = tmp_path / "qemu.new"
        partial.write_text(f'#!/bin/sh\necho run >> {runs}\necho "QEMU emulator version {version}"\n')
        partial.chmod(0o755)
        partial.replace(qemu)  # a new file (inode), as a package upgrade makes

    install("7.2.19")
    assert [qemu_version(str(qemu)) for _ in range(3)] == ["7.2.19"] * 3
    assert runs.read_text() == "run\n"  # cached: a vm run asked for it three times
    install("8.0.1")
    assert qemu_version(str(qemu)) == "8.0.1"  # an upgraded QEMU is probed again
    assert qemu_version(str(tmp_path / "missing")) is None
    _probe_version.cache_clear()


@pytest.mark.integration
def test_sandbox_probe_runs_the_real_binary_once(tmp_path: Path) -> None:
    assert sandbox_option("/usr/bin/qemu-system-x86_64") == SANDBOX  # Debian's QEMU is built with seccomp
    # A QEMU built without seccomp refuses the option ("-sandbox is disabled"): no filter, no failure.
    no_seccomp = tmp_path / "qemu-without-seccomp"
    count = tmp_path / "runs"
    no_seccomp.write_text(f'#!/bin/sh\necho run >> {count}\necho "-sandbox is disabled" >&2\nexit 1\n')
    no_seccomp.chmod(0o755)
    assert sandbox_option(str(no_seccomp)) is None
    assert sandbox_option(str(no_seccomp)) is None
    assert count.read_text() == "run\n"  # cached: probed once per binary file
    assert sandbox_option(str(tmp_path / "missing")) is None
    _probe_sandbox.cache_clear()


@pytest.mark.integration
def test_doctor_warns_about_a_qemu_without_seccomp(plugin_context: PluginContext, tmp_path: Path) -> None:
    (check,) = banger_doctor_checks()
    rows = [(row.name, row.status) for row in check.run(plugin_context)]
    assert rows == [("qemu", "ok")]  # Debian's QEMU: the sandbox is on, nothing to say
    old = tmp_path / "qemu-system-x86_64"
    old.write_text('#!/bin/sh\ncase "$1" in --version) echo "QEMU emulator version 7.2.0";; *) exit 1;; esac\n')
    old.chmod(0o755)
    rows = [(row.name, row.status, row.summary) for row in check.run(context(plugin_context, "absent", qemu_bin=old))]
    assert rows[-1] == (
        "qemu-sandbox",
        "warn",
        f"{old} has no seccomp support (-sandbox): QEMU runs without a system call filter",
    )
