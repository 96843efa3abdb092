"""Entry point of banger-resolved: routes ``*.vm`` through systemd-resolved."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from banger_hookspecs import CheckResult, DnsRouter, DoctorCheck, PluginContext, hookimpl

from .router import ResolvedRouter, resolved_running


@hookimpl
def banger_dns_routers() -> Iterable[DnsRouter]:
    return [
        DnsRouter(
            name="resolved",
            description="systemd-resolved: banger's DNS server for ~vm on the bridge link",
            factory=lambda ctx: ResolvedRouter(ctx.host_ops),
            priority=10,
        )
    ]


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
