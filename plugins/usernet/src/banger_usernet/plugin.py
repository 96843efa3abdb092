"""Entry point of banger-usernet: QEMU user-mode networking (rootless, loopback only)."""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import CheckResult, DoctorCheck, PluginContext, hookimpl


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    yield CheckResult(
        "usernet",
        "ok",
        "user-mode networking needs no privileges; ssh is forwarded on 127.0.0.1 only",
    )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="usernet", run=_check)]
