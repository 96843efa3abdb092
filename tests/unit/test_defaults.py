"""VM size defaults: flags > config vm_defaults > host heuristics with floors."""

from __future__ import annotations

import pytest

from banger_core.common.defaults import effective_defaults, host_defaults


@pytest.mark.parametrize(
    ("cpus", "memory", "expected"),
    [
        (1, 1024, {"vcpus": 1, "memory_mib": 512, "disk_size": 8 << 30}),
        (2, 24105, {"vcpus": 2, "memory_mib": 3013, "disk_size": 8 << 30}),
        (12, 32768, {"vcpus": 3, "memory_mib": 4096, "disk_size": 8 << 30}),
        (64, 512 * 1024, {"vcpus": 4, "memory_mib": 8192, "disk_size": 8 << 30}),
    ],
)
def test_host_heuristics_have_floors_and_caps(cpus: int, memory: int, expected: dict[str, int]) -> None:
    assert host_defaults(cpus, memory) == expected


def test_config_beats_heuristics_per_key() -> None:
    effective = effective_defaults({"vcpu": 6, "disk_size": 16 << 30}, 2, 8192)
    assert effective == {"vcpus": (6, "config"), "memory_mib": (1024, "host"), "disk_size": (16 << 30, "config")}
