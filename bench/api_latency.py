"""Latency of `vm list` through the CLI and the SDK with 100 VM records, and the daemon's memory.

Run: .venv/bin/python bench/api_latency.py [--runs N]

Uses a throw-away HOME and runtime dir, a test plugin providing a tiny image,
and creates 100 VM records without booting them. Prints p50/p99 beside
`python3 -c pass` measured in the same run, and bangerd's resident memory
idle (no VMs) and with the 100 records. Nothing outside the temp dirs is touched;
the daemon it starts is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from banger_core.client import Client  # noqa: E402
from banger_core.testing import FakeSite, isolated_env  # noqa: E402


def timed(fn: object, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--vms", type=int, default=100)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="banger-bench-"))
    site = FakeSite(tmp / "site")
    site.root.mkdir()
    site.write_dist_info("banger-fake-testplugin", "0.0.1", {"fake": "tests.support.banger_fake"})
    env = isolated_env(tmp, config='default_image = "fake-tiny"\n')
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(site.root)])
    runtime = Path(env["XDG_RUNTIME_DIR"])
    banger = str(Path(sys.executable).parent / "banger")
    pid = None
    try:
        client = Client(env)
        client.images.pull("fake-tiny")
        pid = client.daemon.status().pid
        time.sleep(1)
        idle = rss_mib(pid)
        for i in range(args.vms):
            client.vms.create(name=f"bench-{i}", backend="fakevmm", start=False)
        loaded = rss_mib(pid)

        baseline = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.runs)
        cli = timed(lambda: subprocess.run([banger, "vm", "list"], env=env, check=True, capture_output=True), args.runs)
        sdk = timed(lambda: client.vms.list(), args.runs)
        base50 = statistics.median(baseline)
        print(f"VM records: {args.vms}, runs: {args.runs}")
        print(f"python3 -c pass        p50 {base50:7.1f} ms  p99 {pct(baseline, 99):7.1f} ms  (baseline)")
        for label, samples in (("banger vm list (CLI)", cli), ("client.vms.list() (SDK)", sdk)):
            p50 = statistics.median(samples)
            print(f"{label:<22} p50 {p50:7.1f} ms  p99 {pct(samples, 99):7.1f} ms  ratio {p50 / base50:5.2f}")
        print(f"bangerd RSS idle {idle:6.1f} MiB, with {args.vms} VM records {loaded:6.1f} MiB (target < 100 MiB)")
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


if __name__ == "__main__":
    main()
