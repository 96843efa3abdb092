"""Warm start: cold `vm run --rm -- true` vs warm (restored from a template) vs a raw QEMU restore of it.

Run (root, QEMU installed): .venv/bin/python bench/warm_start.py [--runs 3]

One isolated daemon with the golden image. `banger image warm` makes the
template once (not timed as part of a run); then, alternating, each run times:

- cold: `banger vm run --rm --cold -- true` (boot the kernel; the whole CLI path),
- warm: `banger vm run --rm -- true` (restore the template, make the VM its own, ssh),
- raw:  QEMU by hand on sparse copies of the template's disks with
        `-incoming fd:N` (STATE opened for it), QMP `cont`, to `ssh true` answering
        (the floor a warm start over ssh can reach on this host),
- raw-agent: the same restore to the guest agent's first answer (`health`, the template's
        token): the floor for a warm `vm run` whose command goes through the agent.

Every `vm run` gets stdin from /dev/null (no terminal: a command with a terminal keeps ssh).
Prints medians and the ratios warm/cold (target <= 0.35), warm/raw (target <= 1.2) and warm/raw-agent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from vmbench import GOLDEN, bench_env, free_port  # noqa: E402

from banger_core.common import paths  # noqa: E402
from banger_core.common.ssh import SshTarget, banner_ready  # noqa: E402
from banger_core.testing import make_plugin_context  # noqa: E402
from banger_hookspecs import Disk, NicSpec, PortForward, VmSpec  # noqa: E402

BANGER = str(Path(sys.executable).parent / "banger")


def vm_run_true(env: dict[str, str], *flags: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [BANGER, "vm", "run", "--rm", *flags, "--", "true"],
        env=env,
        check=False,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"vm run {' '.join(flags)} exited {result.returncode}: {result.stderr.decode()}")
    return time.perf_counter() - start


def raw_restore(env: dict[str, str], template: Path, work: Path, client_key: Path, *, until: str = "ssh") -> float:
    """QEMU by hand from the template's files; seconds from copying the disks to `ssh true` succeeding
    (``until="ssh"``) or to the guest agent's first answer (``until="agent"``)."""
    from banger_core.common.agent_client import AgentClient
    from banger_core.common.agent_transport import QEMU_AGENT_SOCKET, VirtioSerialTransport
    from banger_qemu.argv import build_argv
    from banger_qemu.driver import QemuDriver
    from banger_qemu.qmp import QmpClient, QmpError

    meta = json.loads((template / "template.json").read_text())
    key = meta["key"]
    if work.exists():
        shutil.rmtree(work)
    (work / "run").mkdir(parents=True, mode=0o700)
    image = paths.state_dir(env) / "images" / key["image"] / "rootfs.ext4"
    kernel_dir = paths.state_dir(env) / "kernels" / key["kernel"]
    port = free_port()
    spec = VmSpec(
        vm_id="0" * 16,
        name="raw",
        kernel=kernel_dir / "vmlinux",
        initrd=kernel_dir / "initrd",
        cmdline=meta["cmdline"],
        disks=(
            Disk(image, True, "image"),
            Disk(work / "overlay.ext4", False, "overlay"),
            Disk(work / "work.ext4", False, "work"),
        ),
        vcpus=key["vcpus"],
        memory_mib=key["memory_mib"],
        # As the template had it: the bench's config says usernet_egress = false (restrict=on, no passt).
        nic=NicSpec(kind="user", mac="02:42:00:00:00:01", forwards=(PortForward("127.0.0.1", port, 22),), egress=False),
        vsock_cid=None,
        run_dir=work / "run",
        serial_log=work / "serial.log",
    )
    driver = QemuDriver(make_plugin_context(env))
    opts = driver.options(spec)
    # As banger restores: the state as an inherited descriptor (-sandbox denies QEMU an `exec:` shell).
    state = os.open(template / "state", os.O_RDONLY)
    argv = [*build_argv(spec, opts), "-incoming", f"fd:{state}"]
    target = SshTarget("banger-template", "127.0.0.1", port, str(client_key), str(template / "known_hosts"))
    agent_token = (template / "agent.token").read_text().strip()
    start = time.perf_counter()
    for name in ("overlay.ext4", "work.ext4"):
        subprocess.run(["cp", "--sparse=always", str(template / name), str(work / name)], check=True)
    log = (work / "qemu.log").open("wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(state,))
    os.close(state)
    try:
        deadline = start + 300
        resumed = False
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"raw QEMU exited with {proc.returncode}: {(work / 'qemu.log').read_text()}")
            if not resumed:
                try:
                    with QmpClient(opts.qmp_socket) as qmp:
                        if qmp.execute("query-status")["status"] == "paused":
                            qmp.execute("cont")
                            resumed = True
                except QmpError:
                    pass
            elif until == "agent":
                agent = AgentClient(VirtioSerialTransport(work / "run" / QEMU_AGENT_SOCKET), agent_token)
                if agent.health(timeout=60)["ok"] is True:
                    return time.perf_counter() - start
            elif banner_ready("127.0.0.1", port):
                probe = subprocess.run([*target.argv(connect_timeout=5), "true"], capture_output=True, check=False)
                if probe.returncode == 0:
                    return time.perf_counter() - start
            time.sleep(0.05)
        raise RuntimeError("raw restore never became ssh-ready")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with bench_env("banger-bench-warm-") as bench:
        made = time.perf_counter()
        template_view = bench.client.images.warm(GOLDEN)
        print(f"template of {GOLDEN} made in {time.perf_counter() - made:.1f} s ({template_view.vmm})", flush=True)
        template = paths.state_dir(bench.env) / "templates" / template_view.digest
        client_key = paths.state_dir(bench.env) / "ssh" / "id_ed25519"
        cold, warm, raw, raw_agent = [], [], [], []
        for run in range(args.runs):
            cold.append(vm_run_true(bench.env, "--cold"))
            warm.append(vm_run_true(bench.env))
            raw.append(raw_restore(bench.env, template, bench.root / "raw", client_key))
            raw_agent.append(raw_restore(bench.env, template, bench.root / "raw", client_key, until="agent"))
            print(
                f"run {run + 1}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s, raw {raw[-1]:.2f} s, "
                f"raw-agent {raw_agent[-1]:.2f} s",
                flush=True,
            )
        # Where the last warm run spent its time: the daemon's progress steps, timestamped.
        daemon_log = (paths.state_dir(bench.env) / "logs" / "bangerd.log").read_text().splitlines()
        last_warm = max(i for i, line in enumerate(daemon_log) if "restoring QEMU" in line)
        print("last warm run, daemon side:")
        for line in daemon_log[last_warm - 3 : last_warm + 12]:
            print(f"  {line}")
        c, w, r, a = (statistics.median(x) for x in (cold, warm, raw, raw_agent))
        print(f"medians: cold {c:.2f} s, warm {w:.2f} s, raw restore {r:.2f} s, raw restore to the agent {a:.2f} s")
        print(
            f"warm/cold = {w / c:.2f} (target <= 0.35); warm/raw = {w / r:.2f} (target <= 1.2); "
            f"warm/raw-agent = {w / a:.2f}"
        )


if __name__ == "__main__":
    main()
