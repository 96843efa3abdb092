"""Runs every registered doctor check; a crashing check becomes a failed row."""

from __future__ import annotations

from typing import TypedDict

from banger_core.common.backends import BackendFinding, choose_backend
from banger_core.common.plugins import PluginManager
from banger_hookspecs import Availability, PluginContext, VmmDriver


class DoctorRow(TypedDict):
    """One line of ``banger doctor`` (and its ``--json``)."""

    check: str
    plugin: str
    name: str
    status: str
    summary: str
    hint: str | None
    blocks_vm_run: bool


def run_checks(pm: PluginManager, ctx: PluginContext) -> list[DoctorRow]:
    rows: list[DoctorRow] = []
    for name, provided in sorted(pm.doctor_checks().items(), key=lambda kv: kv[0] != "core"):
        try:
            results = list(provided.value.run(ctx))
        except Exception as exc:  # a broken check is a finding, not a crash
            rows.append(
                {
                    "check": name,
                    "plugin": provided.plugin.name,
                    "name": name,
                    "status": "fail",
                    "summary": f"check crashed: {type(exc).__name__}: {exc}",
                    "hint": f"report this to the {provided.plugin.dist or provided.plugin.name} maintainers",
                    "blocks_vm_run": False,
                }
            )
            continue
        for result in results:
            rows.append(
                {
                    "check": name,
                    "plugin": provided.plugin.name,
                    "name": result.name,
                    "status": result.status,
                    "summary": result.summary,
                    "hint": result.hint,
                    "blocks_vm_run": result.blocks_vm_run,
                }
            )
    return [*rows, backend_row(pm, ctx)]


def _line(finding: BackendFinding) -> str:
    if not finding.compatible:
        return f'{finding.line()} (set network_backend = "bridge" to use it)'
    return finding.line()


def backend_row(pm: PluginManager, ctx: PluginContext) -> DoctorRow:
    """Which VMM backend `vm run` will use, and why (the daemon's own rule); a failing row when none can."""
    network = str(ctx.config.get("network_backend") or "usernet")
    networks = pm.network_backends()

    def availability(name: str) -> Availability:
        driver: VmmDriver = pm.vmm_backends().require(name).value.factory(ctx)
        return driver.availability()

    choice = choose_backend(
        pm,
        network=network,
        nic_kind=networks[network].value.nic_kind if network in networks else None,
        configured=str(ctx.config.get("vmm_backend") or "auto"),
        requested=None,
        availability=availability,
    )
    chosen = choice.chosen
    if chosen is not None:
        head = f"vmm_backend = {chosen.name}" if choice.explicit else f"auto picks {chosen.name}"
        return _backend_row("ok", f"{head}: {chosen.reason}", None)
    if choice.explicit:
        return _backend_row(
            "fail",
            f"vmm_backend = {choice.explicit} cannot run VMs here ({_line(choice.findings[0])})",
            'set vmm_backend = "auto" in config.toml, or fix the backend',
        )
    return _backend_row(
        "fail",
        "no VMM backend can run VMs here: " + ("; ".join(map(_line, choice.findings)) or "none installed"),
        "install QEMU (apt-get install qemu-system-x86) or Firecracker",
    )


def _backend_row(status: str, summary: str, hint: str | None) -> DoctorRow:
    return {
        "check": "backends",
        "plugin": "core",
        "name": "vmm-backend",
        "status": status,
        "summary": summary,
        "hint": hint,
        "blocks_vm_run": status == "fail",
    }
