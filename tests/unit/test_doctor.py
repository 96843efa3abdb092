"""banger doctor: rows from every plugin, the backend `vm run` would use, exit 1 when it cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from banger_core.testing import invoke_cli

pytestmark = pytest.mark.builtins


def rows(result: object) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in json.loads(result.stdout)["checks"]}  # type: ignore[attr-defined]


def test_rows_from_core_and_plugins(banger_env: dict[str, str]) -> None:
    result = invoke_cli(["doctor", "--json"], banger_env)
    found = rows(result)
    for name in ("python", "kvm", "vm-defaults", "state-dir", "qemu", "firecracker", "git", "vmm-backend"):
        assert name in found, name
    assert found["kvm"]["plugin"] == "core" and found["qemu"]["plugin"] == "qemu"
    if found["vmm-backend"]["status"] == "ok":
        assert str(found["vmm-backend"]["summary"]).startswith("auto picks ")


def test_no_usable_backend_blocks_vm_run(banger_env: dict[str, str]) -> None:
    env = {**banger_env, "BANGER_DISABLE_PLUGINS": "qemu,firecracker"}
    result = invoke_cli(["doctor", "--json"], env)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["vm_run_possible"] is False
    row = rows(result)["vmm-backend"]
    assert row["status"] == "fail" and row["blocks_vm_run"] is True
    assert "no VMM backend can run VMs here" in str(row["summary"])
    human = invoke_cli(["doctor"], env)
    assert human.exit_code == 1 and "1 failing check(s) block `banger vm run`." in human.stdout
    assert "-> install QEMU" in human.stdout


def test_configured_backend_that_cannot_run_is_a_failure(banger_env: dict[str, str]) -> None:
    config = Path(banger_env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('vmm_backend = "firecracker"\nfirecracker_bin = "/nonexistent/firecracker"\n')
    result = invoke_cli(["doctor", "--json"], banger_env)
    row = rows(result)["vmm-backend"]
    assert result.exit_code == 1 and row["status"] == "fail"
    assert str(row["summary"]).startswith("vmm_backend = firecracker cannot run VMs here (firecracker: ")
