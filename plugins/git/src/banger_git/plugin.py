"""Entry point of banger-git: registers the ``git`` workspace syncer and its doctor row."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from banger_hookspecs import CheckResult, DoctorCheck, PluginContext, WorkspaceSyncer, WorkspaceSyncerDriver, hookimpl


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    git = shutil.which("git")
    yield CheckResult(
        "git",
        "ok" if git else "warn",
        f"git at {git}" if git else "git not found: workspace mode (banger vm run PATH) is unavailable",
        hint=None if git else "install it: apt-get install git",
    )


def _make_syncer(ctx: PluginContext) -> WorkspaceSyncerDriver:
    from banger_git.syncer import GitSyncer

    return GitSyncer()


@hookimpl
def banger_workspace_syncers() -> Iterable[WorkspaceSyncer]:
    return [
        WorkspaceSyncer(
            name="git",
            description="a git work tree's tracked files (optionally untracked ones, or a ref's tree) as a tar stream",
            factory=_make_syncer,
        )
    ]


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="git", run=_check)]
