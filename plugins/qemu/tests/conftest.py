"""Fixtures for the qemu plugin's tests: the shared guest fixtures (kernel, initramfs, specs, netns)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"


def _load(name: str) -> ModuleType:
    """Import a shared fixture module from the repository's tests/fixtures by path (once per session)."""
    module_name = f"banger_test_fixtures_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, _FIXTURES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


_guest = _load("guest")
guest_kernel = _guest.guest_kernel
guest_initrd = _guest.guest_initrd
run_dir = _guest.run_dir
make_spec = _guest.make_spec
serial_waiter = _guest.serial_waiter
markers = _guest.markers
tap_netns = _load("tap_netns").tap_netns
