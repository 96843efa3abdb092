"""Entry point of banger-debootstrap: builds images from recipes with debootstrap."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from banger_hookspecs import CheckResult, ConfigOption, DoctorCheck, PluginContext, hookimpl


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption("debian_mirror", "str", help="Debian mirror URL (default: the host's apt sources)"),
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    tool = shutil.which("debootstrap") or (shutil.which("/usr/sbin/debootstrap"))
    yield CheckResult(
        "debootstrap",
        "ok" if tool else "warn",
        f"debootstrap at {tool}" if tool else "debootstrap not found: images cannot be built locally",
        hint=None if tool else "install it: apt-get install debootstrap",
    )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="debootstrap", run=_check)]
