"""Fixtures for the qemu plugin's tests: real kernel + test initramfs, run dirs, VM specs."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from banger_hookspecs import Disk, VmSpec

_FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"


def _load(name: str) -> ModuleType:
    """Import a shared fixture module from the repository's tests/fixtures by path."""
    module_name = f"banger_test_fixtures_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, _FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


kernel_fixtures = _load("kernel")
netns_fixtures = _load("tap_netns")
guest_kernel = kernel_fixtures.guest_kernel
guest_initrd = kernel_fixtures.guest_initrd
tap_netns = netns_fixtures.tap_netns
GUEST_MARKER: str = kernel_fixtures.GUEST_MARKER
POWER_BUTTON_MARKER: str = kernel_fixtures.POWER_BUTTON_MARKER


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short per-test run dir (Unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="bvm-", dir="/tmp"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_disks(directory: Path) -> tuple[Disk, ...]:
    """Image (read-only), overlay and work disks: small sparse raw files."""
    disks = []
    for role, read_only in (("image", True), ("overlay", False), ("work", False)):
        path = directory / f"{role}.img"
        with path.open("wb") as fh:
            fh.truncate(4 << 20)
        disks.append(Disk(path=path, read_only=read_only, role=role))  # type: ignore[arg-type]
    return tuple(disks)


SpecFactory = Callable[..., VmSpec]


@pytest.fixture
def make_spec(run_dir: Path) -> SpecFactory:
    """Build a :class:`VmSpec` in ``run_dir``; keyword arguments override fields."""

    def factory(**overrides: object) -> VmSpec:
        values: dict[str, object] = {
            "vm_id": "0123456789abcdef",
            "name": "testvm",
            "kernel": Path("/nonexistent/vmlinux"),
            "initrd": Path("/nonexistent/initrd"),
            "cmdline": "console=ttyS0 panic=-1 banger.proto=1",
            "disks": make_disks(run_dir),
            "vcpus": 2,
            "memory_mib": 256,
            "nic": None,
            "vsock_cid": None,
            "run_dir": run_dir,
            "serial_log": run_dir / "serial.log",
        }
        values.update(overrides)
        return VmSpec(**values)  # type: ignore[arg-type]

    return factory


def wait_for_line(path: Path, marker: str, timeout: float = 120.0) -> str:
    """Poll ``path`` until it contains ``marker``; return the text (fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if marker in text:
            return text
        time.sleep(0.1)
    pytest.fail(f"{marker!r} did not appear in {path} within {timeout:.0f} s; last output:\n{text[-2000:]}")


@pytest.fixture
def serial_waiter() -> Callable[..., str]:
    """:func:`wait_for_line`, for test modules (which cannot import the conftest)."""
    return wait_for_line


@pytest.fixture
def markers() -> tuple[str, str]:
    """``(guest up marker, power button marker)`` printed by the test initramfs."""
    return GUEST_MARKER, POWER_BUTTON_MARKER
