"""Launch latency of the VMM drivers, with the test kernel + busybox initramfs from tests/fixtures/guest.py.

Run (root, for Firecracker's /dev/kvm): .venv/bin/python bench/vmm_launch.py [--runs N]

Prints medians in seconds:
* qemu: ``launch()`` returning (QMP says running), launch to the guest's marker
  on serial, ``stop()`` via the ACPI power button, and as the baseline measured
  in the same run, a bare ``qemu-system-x86_64 --version``;
* firecracker: ``launch()`` through every API call to ``Running`` (the guest
  itself cannot boot without hardware KVM), against ``firecracker --version``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import Disk, PluginContext, VmSpec

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_fixture_{name}", ROOT / "tests" / "fixtures" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _spec(run_dir: Path, kernel: Path, initrd: Path) -> VmSpec:
    disks = []
    for role, read_only in (("image", True), ("overlay", False), ("work", False)):
        path = run_dir / f"{role}.img"
        with path.open("wb") as fh:
            fh.truncate(4 << 20)
        disks.append(Disk(path=path, read_only=read_only, role=role))  # type: ignore[arg-type]
    return VmSpec(
        vm_id="0123456789abcdef",
        name="bench",
        kernel=kernel,
        initrd=initrd,
        cmdline="console=ttyS0 panic=-1",
        disks=tuple(disks),
        vcpus=2,
        memory_mib=256,
        nic=None,
        vsock_cid=None,
        run_dir=run_dir,
        serial_log=run_dir / "serial.log",
    )


def _wait_marker(path: Path, marker: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and marker in path.read_text(errors="replace"):
            return
        time.sleep(0.01)
    raise RuntimeError(f"{marker} not seen in {path}")


def _median(samples: list[float]) -> str:
    return f"{statistics.median(samples):6.3f} s (min {min(samples):.3f}, max {max(samples):.3f}, n={len(samples)})"


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_qemu(ctx: PluginContext, kernel: Path, initrd: Path, marker: str, runs: int) -> None:
    from banger_qemu.driver import QemuDriver

    driver = QemuDriver(ctx)
    launch, to_marker, stop = [], [], []
    for _ in range(runs):
        run_dir = Path(tempfile.mkdtemp(prefix="bvm-bench-", dir="/tmp"))
        spec = _spec(run_dir, kernel, initrd)
        try:
            start = time.perf_counter()
            proc = driver.launch(spec, RecordingProgress())
            launch.append(time.perf_counter() - start)
            try:
                _wait_marker(spec.serial_log, marker)
                to_marker.append(time.perf_counter() - start)
                stop.append(_timed(lambda: driver.stop(proc, timeout=60)))  # noqa: B023 -- called at once
            finally:
                driver.kill(proc)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    binary = driver.options(spec).binary
    baseline = [_timed(lambda: subprocess.run([binary, "--version"], capture_output=True)) for _ in range(runs)]
    print(f"qemu ({driver.machine}, {driver.accel}):")
    print(f"  --version (baseline)      {_median(baseline)}")
    print(f"  launch() -> running       {_median(launch)}")
    print(f"  launch() -> guest marker  {_median(to_marker)}")
    print(f"  stop() (ACPI power-off)   {_median(stop)}")


def bench_firecracker(ctx: PluginContext, binary: Path, kernel: Path, initrd: Path, runs: int) -> None:
    from banger_firecracker.driver import FirecrackerDriver

    driver = FirecrackerDriver(dataclasses.replace(ctx, config={**ctx.config, "firecracker_bin": binary}))
    launch = []
    for _ in range(runs):
        run_dir = Path(tempfile.mkdtemp(prefix="bvm-bench-", dir="/tmp"))
        try:
            start = time.perf_counter()
            proc = driver.launch(_spec(run_dir, kernel, initrd), RecordingProgress())
            launch.append(time.perf_counter() - start)
            driver.kill(proc)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    baseline = [_timed(lambda: subprocess.run([str(binary), "--version"], capture_output=True)) for _ in range(runs)]
    print("firecracker:")
    print(f"  --version (baseline)      {_median(baseline)}")
    ratio = statistics.median(launch) / statistics.median(baseline)
    print(f"  launch() -> Running       {_median(launch)}  ({ratio:.1f}x the baseline)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    guest = _load("guest")
    cache = guest.cache_root()
    kernel = guest.debian_cloud_kernel(cache)
    initrd = guest.build_test_initramfs(cache, kernel)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/.config", "XDG_RUNTIME_DIR": f"{home}/run"}
        Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700)
        ctx = make_plugin_context({k: v for k, v in env.items() if not k.startswith("BANGER_")})
        bench_qemu(ctx, kernel.vmlinux, initrd, guest.GUEST_MARKER, args.runs)
        firecracker = _load("firecracker").firecracker_dir() / "firecracker"
        bench_firecracker(ctx, firecracker, kernel.vmlinux, initrd, args.runs)


if __name__ == "__main__":
    main()
