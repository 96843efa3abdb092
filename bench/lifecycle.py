"""VM lifecycle timings: banger's create -> ssh-ready, stop and delete, beside a raw QEMU launch.

Run (root, QEMU installed): .venv/bin/python bench/lifecycle.py [--runs 5]

Both sides boot the golden image with the same kernel, initramfs, disks layout
and QEMU argv (built by the qemu plugin) under QEMU TCG with user-mode
networking on 127.0.0.1. "raw" is `qemu-system-x86_64` started by hand on
pre-made disks and timed from launch to a successful `ssh true`; banger's
create is timed from the request to the VM being ssh-ready (disks, network,
QMP, readiness included). Runs alternate between the two so load drifts hit
both. Everything lives in temp dirs; processes are stopped by pid.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))

from vmbench import bench_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    created: list[float] = []
    stopped: list[float] = []
    deleted: list[float] = []
    raw: list[float] = []
    with bench_env("banger-bench-lifecycle-") as bench:
        client = bench.client
        for i in range(args.runs):
            raw.append(bench.raw_boot())
            start = time.perf_counter()
            client.vms.create(name=f"bench-{i}", vcpus=2, memory_mib=3013)
            created.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.vms.stop(f"bench-{i}")
            stopped.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.vms.delete(f"bench-{i}")
            deleted.append(time.perf_counter() - start)
            print(f"run {i + 1}: raw {raw[-1]:.1f} s, create {created[-1]:.1f} s, "
                  f"stop {stopped[-1]:.1f} s, delete {deleted[-1]:.2f} s", flush=True)  # fmt: skip
    raw_m, create_m = statistics.median(raw), statistics.median(created)
    print(f"\nmedians over {args.runs} runs (QEMU TCG, usernet, 2 vCPU):")
    print(f"raw qemu launch -> ssh true      {raw_m:6.2f} s  (baseline)")
    print(f"banger create -> ssh-ready      {create_m:6.2f} s  ratio {create_m / raw_m:4.2f} (target <= 1.15)")
    print(f"banger stop (ACPI power-off)    {statistics.median(stopped):6.2f} s")
    print(f"banger delete (stopped VM)      {statistics.median(deleted):6.2f} s")


if __name__ == "__main__":
    main()
