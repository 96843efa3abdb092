"""The guest agent: its start-up and memory in the guest, and an exec round trip beside `ssh true`.

Run (root, QEMU installed): .venv/bin/python bench/agent.py [--runs 10]

Boots one golden-image VM through an isolated daemon (QEMU TCG, usernet), then:
the agent's own figures from `health` (exec of python3 -> serving, VmRSS),
the median of `runs` agent `exec true` round trips (connect + token + exec +
exit status) and of `runs` `banger vm ssh VM -- true` (banger's ssh path, the
baseline), alternating. Everything lives in temp dirs; the daemon is stopped by pid.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from vmbench import bench_env  # noqa: E402

from banger_core.common import paths  # noqa: E402
from banger_core.daemon.agent.client import agent_client_at  # noqa: E402
from banger_core.daemon.layout import Layout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with bench_env("banger-bench-agent-") as bench:
        vm = bench.client.vms.create(name="agentbench")
        layout = Layout(paths.state_dir(bench.env), paths.runtime_dir(bench.env))
        client = agent_client_at(layout, vm.id)
        health = client.health(timeout=60)
        agent_exec: list[float] = []
        ssh: list[float] = []
        for _ in range(args.runs):
            started = time.monotonic()
            status = client.exec(["true"], stdout=lambda _: None, stderr=lambda _: None, timeout=60)
            agent_exec.append(time.monotonic() - started)
            assert status == 0
            started = time.monotonic()
            subprocess.run(
                [str(REPO / ".venv/bin/banger"), "vm", "ssh", "agentbench", "--", "true"],
                env=bench.env,
                check=True,
                capture_output=True,
            )
            ssh.append(time.monotonic() - started)
    print(f"agent ready after exec (in the guest): {health['ready_ms']} ms; VmRSS {health['rss_kib']} KiB")
    print(f"agent python: {health['python']}")
    print(f"agent exec true, median of {args.runs}: {statistics.median(agent_exec) * 1000:.0f} ms")
    print(f"banger vm ssh -- true (baseline), median of {args.runs}: {statistics.median(ssh) * 1000:.0f} ms")
    print(f"ratio agent/ssh: {statistics.median(agent_exec) / statistics.median(ssh):.2f}")


if __name__ == "__main__":
    main()
