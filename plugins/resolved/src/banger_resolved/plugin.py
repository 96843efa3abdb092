"""Entry point of banger-resolved: routes ``*.vm`` through systemd-resolved."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from banger_hookspecs import CheckResult, DoctorCheck, PluginContext, hookimpl

RESOLVED_RUNTIME = Path("/run/systemd/resolve")


def resolved_running(runtime: Path = RESOLVED_RUNTIME) -> bool:
    """systemd-resolved is active when its runtime dir holds its stub resolv.conf."""
    return (runtime / "stub-resolv.conf").exists() or (runtime / "io.systemd.Resolve").exists()


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    running = resolved_running()
    tool = shutil.which("resolvectl")
    if running and tool:
        yield CheckResult("systemd-resolved", "ok", "systemd-resolved runs: *.vm can be routed to banger's DNS")
    else:
        yield CheckResult(
            "systemd-resolved",
            "info",
            "systemd-resolved is not running: *.vm names need manual resolver setup",
            hint="see docs/dns-routing.md for dnsmasq and resolv.conf recipes",
        )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="resolved", run=_check)]
