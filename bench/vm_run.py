"""`banger vm run` wall time beside a raw QEMU boot, and workspace sync throughput beside raw tar over ssh.

Run (root, QEMU installed): .venv/bin/python bench/vm_run.py [--runs 5] [--files 10000] [--megabytes 200]

(a) `banger vm run --rm -- true` with image and kernel cached (the whole CLI
    path: spec, create, boot, ssh, command, delete) beside a raw QEMU boot of
    the same image to `ssh true` (bench/vmbench.py), alternating runs.
(b) Into one running VM: `banger vm workspace sync` of a generated repository
    (--files files, --megabytes MB; built once and cached under
    $BANGER_TEST_CACHE) beside `git ls-files -z | tar --null -T - -c | ssh VM
    tar -x`, both into fresh directories, alternating runs.
Figures are medians; ratios compare with the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from git_sync import build_repo  # noqa: E402
from vmbench import bench_env  # noqa: E402

from banger_core.common.ssh import SshTarget  # noqa: E402

BANGER = str(Path(sys.executable).parent / "banger")


def vm_run_true(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([BANGER, "vm", "run", "--rm", "--", "true"], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def raw_tar(repo: Path, target: SshTarget, dest: str) -> float:
    start = time.perf_counter()
    files = subprocess.Popen(["git", "-C", str(repo), "ls-files", "-z"], stdout=subprocess.PIPE)
    tar = subprocess.Popen(
        ["tar", "-C", str(repo), "--null", "-T", "-", "-cf", "-"], stdin=files.stdout, stdout=subprocess.PIPE
    )
    assert files.stdout is not None and tar.stdout is not None
    files.stdout.close()
    remote = f"mkdir -p {shlex.quote(dest)} && tar -x -C {shlex.quote(dest)}"
    subprocess.run([*target.argv(), remote], stdin=tar.stdout, check=True)
    tar.stdout.close()
    if tar.wait() != 0 or files.wait() != 0:
        raise RuntimeError("raw tar pipeline failed")
    return time.perf_counter() - start


def banger_sync(env: dict[str, str], name: str, repo: Path, dest: str, *flags: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [BANGER, "vm", "workspace", "sync", name, str(repo), "--guest-path", dest, *flags],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    with bench_env("banger-bench-vmrun-") as bench:
        env, client = bench.env, bench.client

        runs: list[float] = []
        raws: list[float] = []
        for i in range(args.runs):
            raws.append(bench.raw_boot())
            runs.append(vm_run_true(env))
            print(f"run {i + 1}: raw boot {raws[-1]:.1f} s, vm run --rm -- true {runs[-1]:.1f} s", flush=True)
        raw_m, run_m = statistics.median(raws), statistics.median(runs)
        print(f"\n(a) medians over {args.runs} runs (QEMU TCG, usernet):")
        print(f"raw QEMU boot -> ssh true           {raw_m:6.2f} s  (baseline)")
        print(f"banger vm run --rm -- true          {run_m:6.2f} s  ratio {run_m / raw_m:4.2f} (target <= 1.2)")

        cache = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache"))
        repo = build_repo(cache, args.files, args.megabytes)
        client.vms.create(name="bench-sync", memory_mib=2048)
        target = SshTarget(**client.vms.ssh_target("bench-sync").model_dump())
        size = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts)
        raw_times: list[float] = []
        full_times: list[float] = []
        incremental_times: list[float] = []
        for i in range(args.runs):
            raw_times.append(raw_tar(repo, target, f"/root/raw-{i}"))
            full_times.append(banger_sync(env, "bench-sync", repo, f"/root/full-{i}", "--full"))
            incremental_times.append(banger_sync(env, "bench-sync", repo, f"/root/incr-{i}"))
            print(
                f"sync {i + 1}: raw {raw_times[-1]:.2f} s, banger full {full_times[-1]:.2f} s, "
                f"banger incremental into an empty dir {incremental_times[-1]:.2f} s",
                flush=True,
            )
            subprocess.run([*target.argv(), f"rm -rf /root/raw-{i} /root/full-{i} /root/incr-{i}"], check=True)
        raw_s = statistics.median(raw_times)
        mib = size / (1 << 20)
        print(f"\n(b) {args.files} files, {mib:.0f} MiB into the guest, medians over {args.runs} runs:")
        print(f"raw git ls-files | tar | ssh tar -x        {raw_s:6.2f} s  {mib / raw_s:6.1f} MiB/s  (baseline)")
        for label, times in (
            ("banger workspace sync --full (= vm run)", full_times),
            ("banger workspace sync (incremental)", incremental_times),
        ):
            t = statistics.median(times)
            print(f"{label:<42} {t:6.2f} s  {mib / t:6.1f} MiB/s  throughput ratio {raw_s / t:4.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
