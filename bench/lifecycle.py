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
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from banger_core import guest  # noqa: E402
from banger_core.client import Client  # noqa: E402
from banger_core.ssh import SshKeys, SshTarget, banner_ready  # noqa: E402
from banger_core.testing import make_plugin_context  # noqa: E402
from banger_hookspecs import Disk, GuestNetConfig, NicSpec, PortForward, VmSpec  # noqa: E402

GOLDEN = "debian-bookworm"
USERNET = GuestNetConfig(address="10.0.2.15", prefix=24, gateway="10.0.2.2", dns="10.0.2.3")


def isolated_env(root: Path) -> dict[str, str]:
    cache = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache")) / "xdg-cache"
    runtime = Path(tempfile.mkdtemp(prefix="bgl-", dir="/tmp"))
    home = root / "home"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANGER_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_CACHE_HOME=str(cache),
        XDG_RUNTIME_DIR=str(runtime),
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raw_boot(env: dict[str, str], image: dict[str, str], kernel: dict[str, str], work: Path, keys: SshKeys) -> float:
    """Launch QEMU by hand on fresh disks; seconds from exec to `ssh true` succeeding."""
    from banger_qemu.argv import build_argv
    from banger_qemu.driver import QemuDriver

    if work.exists():
        shutil.rmtree(work)
    (work / "run").mkdir(parents=True, mode=0o700)
    identity = guest.new_identity("raw")
    guest.create_overlay_disk(work / "overlay.ext4", 8 << 30, identity)
    staging = work / "staging"
    staging.mkdir()
    guest.stage_authorized_keys(staging, keys.public_key())
    guest.create_work_disk(work / "work.ext4", 8 << 30, staging)
    keys.pin("raw.vm", identity.host_key_public)
    port = free_port()
    kdir = Path(kernel["path"])
    spec = VmSpec(
        vm_id="0" * 16,
        name="raw",
        kernel=kdir / "vmlinux",
        initrd=kdir / "initrd",
        cmdline=guest.kernel_cmdline("raw", USERNET),
        disks=(
            Disk(Path(image["path"]), True, "image"),
            Disk(work / "overlay.ext4", False, "overlay"),
            Disk(work / "work.ext4", False, "work"),
        ),
        vcpus=2,
        memory_mib=min(3013, 8192),
        nic=NicSpec(kind="user", mac="52:54:00:aa:bb:cc", forwards=(PortForward("127.0.0.1", port, 22),)),
        vsock_cid=None,
        run_dir=work / "run",
        serial_log=work / "serial.log",
    )
    driver = QemuDriver(make_plugin_context(env))
    argv = build_argv(spec, driver.options(spec))
    target = SshTarget("raw", "127.0.0.1", port, str(keys.key), str(keys.known_hosts))
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = start + 600
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"raw QEMU exited with {proc.returncode}")
            if banner_ready("127.0.0.1", port):
                probe = subprocess.run([*target.argv(connect_timeout=5), "true"], capture_output=True, check=False)
                if probe.returncode == 0:
                    return time.perf_counter() - start
            time.sleep(0.2)
        raise RuntimeError("raw QEMU guest never became ssh-ready")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="banger-bench-lifecycle-"))
    env = isolated_env(root)
    client = Client(env)
    daemon_pid = None
    created: list[float] = []
    stopped: list[float] = []
    deleted: list[float] = []
    raw: list[float] = []
    try:
        client.images.pull(GOLDEN)
        daemon_pid = client.daemon.status()["pid"]
        image = client.images.get(GOLDEN)
        kernel = next(k for k in client.kernels.list() if k["ref"] == image["kernel_ref"])
        keys = SshKeys(root / "raw-ssh")
        keys.ensure()
        for i in range(args.runs):
            raw.append(raw_boot(env, image, kernel, root / "raw", keys))
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
    finally:
        for vm in client.vms.list() if daemon_pid else []:
            client.vms.delete(vm["name"], force=True)
        if daemon_pid is not None:
            os.kill(daemon_pid, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


if __name__ == "__main__":
    main()
