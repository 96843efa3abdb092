"""Entry point of banger-git: registers the ``git`` workspace syncer and its doctor row."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from banger_hookspecs import CheckResult, DoctorCheck, PluginContext, hookimpl


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    git = shutil.which("git")
    yield CheckResult(
        "git",
        "ok" if git else "warn",
        f"git at {git}" if git else "git not found: workspace mode (banger vm run PATH) is unavailable",
        hint=None if git else "install it: apt-get install git",
    )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="git", run=_check)]
