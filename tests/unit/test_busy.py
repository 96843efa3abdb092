"""The daemon's count of operations in progress (``GET /v1/daemon``'s ``in_progress``, read by `banger update`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from banger_core.daemon.busy import Busy, busy_while


class Service:
    def __init__(self) -> None:
        self.rt = SimpleNamespace(busy=Busy())
        self.seen: list[dict[str, int]] = []

    @busy_while("image pull")
    def pull(self, fail: bool = False) -> str:
        self.seen.append(self.rt.busy.snapshot())
        if fail:
            raise RuntimeError("broken")
        return "pulled"

    @busy_while("vm create")
    def create(self) -> None:
        self.pull()  # a create pulls its image: both count while it does


def test_operations_count_while_they_run_and_not_after() -> None:
    service = Service()
    assert service.pull() == "pulled"
    service.create()
    assert service.seen == [{"image pull": 1}, {"image pull": 1, "vm create": 1}]
    assert service.rt.busy.snapshot() == {}


def test_a_failed_operation_is_no_longer_counted() -> None:
    service = Service()
    with pytest.raises(RuntimeError):
        service.pull(fail=True)
    assert service.rt.busy.snapshot() == {}
    assert Service.pull.__name__ == "pull"  # the decorator keeps the method's identity for logs and docs
