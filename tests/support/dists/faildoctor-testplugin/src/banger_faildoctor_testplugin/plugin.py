"""One ``banger doctor`` row, always a blocking failure: what a broken release looks like after its swap."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from banger_hookspecs import CheckResult, DoctorCheck, PluginContext, hookimpl

SUMMARY = "this release is broken on purpose (banger-faildoctor-testplugin)"
HINT = "roll back: this check never passes"


def always_fails(ctx: PluginContext) -> Iterator[CheckResult]:
    yield CheckResult("faildoctor", "fail", SUMMARY, HINT, blocks_vm_run=True)


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck("faildoctor", always_fails)]
