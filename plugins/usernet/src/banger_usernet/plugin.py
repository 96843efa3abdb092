"""Entry point of banger-usernet: QEMU user-mode networking (rootless, loopback only)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from banger_hookspecs import (
    CheckResult,
    ConfigOption,
    DoctorCheck,
    NetworkBackend,
    NetworkDriver,
    PluginContext,
    hookimpl,
)


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


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption(
            "usernet_egress",
            "bool",
            True,
            help="usernet guests created without --host-access: true = internet through passt when it is "
            "installed (never the host's 127.0.0.1); false = no outbound connection at all (QEMU restrict=on)",
        )
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    base = "user-mode networking needs no privileges; ssh is forwarded on 127.0.0.1 only (QEMU backend only); "
    if not ctx.config.get("usernet_egress", True):
        yield CheckResult(
            "usernet",
            "ok",
            base + "usernet_egress = false: guests open no outbound connection unless created with --host-access",
        )
    elif shutil.which("passt") is not None:
        yield CheckResult(
            "usernet",
            "ok",
            base + "guests get internet egress through passt but not the host's 127.0.0.1 "
            "unless created with --host-access",
        )
    else:
        yield CheckResult(
            "usernet",
            "warn",
            base + "passt is not installed, so guests have no network egress unless created with "
            "--host-access (which also exposes the host's 127.0.0.1)",
            hint="install passt for guest internet without host-loopback access: apt-get install passt",
        )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="usernet", run=_check)]
