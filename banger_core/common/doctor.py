"""Runs every registered doctor check; a crashing check becomes a failed row."""

from __future__ import annotations

from typing import Any

from banger_core.common.plugins import PluginManager
from banger_hookspecs import PluginContext


def run_checks(pm: PluginManager, ctx: PluginContext) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
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
    return rows + backend_rows(pm, ctx)


def backend_rows(pm: PluginManager, ctx: PluginContext) -> list[dict[str, Any]]:
    """Which VMM backend `vm run` will use, and why; a failing row when none can run VMs."""
    usable: list[tuple[int, str, str]] = []
    reasons: list[str] = []
    network = str(ctx.config.get("network_backend") or "usernet")
    networks = pm.network_backends()
    nic_kind = networks[network].value.nic_kind if network in networks else None
    for name, provided in sorted(pm.vmm_backends().items()):
        if nic_kind is not None and nic_kind not in provided.value.nic_kinds:
            reasons.append(f'{name}: cannot attach {network} NICs (set network_backend = "bridge" to use it)')
            continue
        try:
            availability = provided.value.factory(ctx).availability()
        except Exception as exc:
            reasons.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        reasons.append(f"{name}: {availability.reason}")
        if availability.usable:
            usable.append((availability.preference, name, availability.reason))
    configured = str(ctx.config.get("vmm_backend") or "auto")
    row: dict[str, Any] = {"check": "backends", "plugin": "core", "name": "vmm-backend", "blocks_vm_run": False}
    if configured != "auto":
        chosen = [u for u in usable if u[1] == configured]
        if chosen:
            return [{**row, "status": "ok", "summary": f"vmm_backend = {configured}: {chosen[0][2]}", "hint": None}]
        why = next((r for r in reasons if r.startswith(f"{configured}:")), f"{configured}: not installed")
        return [
            {
                **row,
                "status": "fail",
                "summary": f"vmm_backend = {configured} cannot run VMs here ({why})",
                "hint": 'set vmm_backend = "auto" in config.toml, or fix the backend',
                "blocks_vm_run": True,
            }
        ]
    if not usable:
        return [
            {
                **row,
                "status": "fail",
                "summary": "no VMM backend can run VMs here: " + ("; ".join(reasons) or "none installed"),
                "hint": "install QEMU (apt-get install qemu-system-x86) or Firecracker",
                "blocks_vm_run": True,
            }
        ]
    _, name, reason = max(usable)
    return [{**row, "status": "ok", "summary": f"auto picks {name}: {reason}", "hint": None}]
