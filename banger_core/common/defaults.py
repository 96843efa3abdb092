"""VM size defaults: config ``vm_defaults`` first, else host heuristics (with floors)."""

from __future__ import annotations

from collections.abc import Mapping

#: Two vCPUs boot systemd markedly faster than one (measured under TCG too), unless the host has one CPU.
MIN_VCPUS = 2
MIN_MEMORY_MIB = 512
DEFAULT_DISK = 8 << 30
CONFIG_KEYS = {"vcpus": "vcpu", "memory_mib": "memory_mib", "disk_size": "disk_size"}


def host_defaults(cpus: int, memory_mib: int) -> dict[str, int]:
    """cpus/4 capped at 4 (at least 2, never more than the host has), RAM/8 capped at 8 GiB
    (at least 512 MiB), an 8 GiB disk."""
    return {
        "vcpus": max(min(MIN_VCPUS, cpus), min(4, cpus // 4)),
        "memory_mib": max(MIN_MEMORY_MIB, min(8192, memory_mib // 8)),
        "disk_size": DEFAULT_DISK,
    }


def effective_defaults(vm_defaults: Mapping[str, int] | None, cpus: int, memory_mib: int) -> dict[str, tuple[int, str]]:
    """``key -> (value, source)`` with source ``config`` or ``host``; ``vm_defaults`` is the validated config table."""
    heuristic = host_defaults(cpus, memory_mib)
    configured = vm_defaults or {}
    out: dict[str, tuple[int, str]] = {}
    for key, config_key in CONFIG_KEYS.items():
        if config_key in configured:
            out[key] = (configured[config_key], "config")
        else:
            out[key] = (heuristic[key], "host")
    return out
