"""Entry point of banger-usernet: QEMU user-mode networking (rootless, loopback only)."""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import CheckResult, DoctorCheck, NetworkBackend, NetworkDriver, PluginContext, hookimpl


def _make_driver(ctx: PluginContext) -> NetworkDriver:
    from banger_usernet.driver import UsernetDriver

    return UsernetDriver(ctx)


@hookimpl
def banger_network_backends() -> Iterable[NetworkBackend]:
    return [
        NetworkBackend(
            name="usernet",
            description="QEMU user-mode NAT: no root, guest ssh forwarded to 127.0.0.1",
            factory=_make_driver,
            nic_kind="user",
        )
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    yield CheckResult(
        "usernet",
        "ok",
        "user-mode networking needs no privileges; ssh is forwarded on 127.0.0.1 only (QEMU backend only); "
        "guests are isolated from the host's loopback and every network unless created with --host-access",
    )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="usernet", run=_check)]
