"""Latency of `vm list` and name completion through the CLI, and of the SDK, with 100 VM records.

Run: .venv/bin/python bench/api_latency.py [--runs N] [--importtime]

Uses a throw-away HOME and runtime dir, a test plugin providing a tiny image,
and creates 100 VM records without booting them. Prints p50/p99 beside
`python3 -c pass` measured in the same run, and bangerd's resident memory
idle (no VMs) and with the 100 records. ``--importtime`` also prints the
slowest imports of one `banger vm list` (``python -X importtime``). Nothing outside the temp dirs is touched;
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
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from banger_core.client import Client  # noqa: E402
from banger_core.testing import FakeSite, isolated_env  # noqa: E402


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
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
    parser.add_argument("--importtime", action="store_true", help="show the 15 slowest imports of `vm list`")
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

        def cli(*argv: str, extra: dict[str, str] | None = None) -> Callable[[], object]:
            command_env = {**env, **(extra or {})}
            return lambda: subprocess.run([banger, *argv], env=command_env, check=True, capture_output=True)

        # What bash's completion function runs on `banger vm show <Tab>`: click answers from the environment.
        tab = {"_BANGER_COMPLETE": "bash_complete", "COMP_WORDS": "banger vm show ", "COMP_CWORD": "3"}
        commands = {
            "python3 -c pass": lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
            "banger vm list": cli("vm", "list"),
            "banger vm list --json": cli("vm", "list", "--json"),
            "Tab: banger vm show _": cli(extra=tab),
            "client.vms.list() (SDK)": client.vms.list,
        }
        for command in commands.values():
            command()  # warm the page cache
        samples = {label: timed(command, args.runs) for label, command in commands.items()}
        base50 = statistics.median(samples["python3 -c pass"])
        print(f"VM records: {args.vms}, runs: {args.runs}")
        for label, values in samples.items():
            p50 = statistics.median(values)
            print(f"{label:<24} p50 {p50:7.1f} ms  p99 {pct(values, 99):7.1f} ms  ratio {p50 / base50:5.2f}")
        if args.importtime:
            traced = subprocess.run(
                [sys.executable, "-X", "importtime", banger, "vm", "list"], env=env, capture_output=True, text=True
            )
            imports = [line.split("|") for line in traced.stderr.splitlines() if line.startswith("import time:")][1:]
            print("slowest imports of `banger vm list` (cumulative us, module):")
            for _, cumulative, module in sorted(imports, key=lambda row: -int(row[1]))[:15]:
                print(f"  {int(cumulative):8d}  {module.rstrip()}")
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
