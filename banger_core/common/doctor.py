"""Runs every registered doctor check; a crashing check becomes a failed row."""

from __future__ import annotations

from typing import TypedDict

from banger_core.common.backends import BackendFinding, choose_backend
from banger_core.common.buildinfo import UNKNOWN, BuildInfo
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


def _is_dev(info: BuildInfo) -> bool:
    return info.version in ("dev", UNKNOWN) or info.commit == UNKNOWN


def _shown(info: BuildInfo) -> str:
    return f"{info.version} (commit {info.short_commit})"


def version_row(cli: BuildInfo, daemon: BuildInfo | None, installed: BuildInfo | None) -> DoctorRow:
    """Do the running CLI, the running daemon and install.toml describe the same build?

    Drift is one ``warn`` line naming all three; a development or unknown build
    among them turns the comparison off (every checkout commit would differ).
    ``daemon`` is None when none answers, ``installed`` when banger is not installed as a service.
    """
    builds = {"CLI": cli, "daemon": daemon, "install.toml": installed}
    present = {who: info for who, info in builds.items() if info is not None}
    dev = [who for who, info in present.items() if _is_dev(info)]
    if dev:
        return version_finding("info", f"version drift not checked: development build ({', '.join(dev)})", None)
    if len({(info.version, info.commit) for info in present.values()}) == 1:
        absent = "" if daemon is not None else " (no daemon running)"
        return version_finding("ok", f"{' = '.join(present)}: banger {_shown(cli)}{absent}", None)
    summary = "version drift: " + ", ".join(f"{who} {_shown(info)}" for who, info in present.items())
    if installed is not None:
        hint = "`sudo banger system restart` runs the installed build; `sudo banger system install` installs this CLI's"
    else:
        hint = "`banger daemon restart` starts the daemon of this CLI's build"
    return version_finding("warn", summary, hint)


def version_finding(status: str, summary: str, hint: str | None) -> DoctorRow:
    """A row of the ``version`` check."""
    return {
        "check": "version",
        "plugin": "core",
        "name": "version",
        "status": status,
        "summary": summary,
        "hint": hint,
        "blocks_vm_run": False,
    }
