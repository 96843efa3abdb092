"""Fixtures of the Firecracker plugin's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from banger_firecracker.driver import FirecrackerDriver
from banger_hookspecs import VmProcess
from banger_hookspecs.process import is_same_process


@pytest.fixture
def launched() -> Iterator[list[tuple[FirecrackerDriver, VmProcess]]]:
    """VMs a test launched; killed at teardown whatever happened."""
    vms: list[tuple[FirecrackerDriver, VmProcess]] = []
    yield vms
    for driver, proc in vms:
        driver.kill(proc)
        assert not is_same_process(proc.pid, proc.start_time)
