"""Runs every registered doctor check; a crashing check becomes a failed row."""

from __future__ import annotations

from typing import Any

from banger_core.plugins import PluginManager
from banger_hookspecs import PluginContext


def run_checks(pm: PluginManager, ctx: PluginContext) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, provided in sorted(pm.providers("banger_doctor_checks").items(), key=lambda kv: kv[0] != "core"):
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
    return rows
