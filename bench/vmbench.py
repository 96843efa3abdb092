"""Shared pieces of the VM benchmarks: an isolated banger environment and a raw QEMU boot."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from banger_core import testing
from banger_core.api.models import ImageView, KernelView
from banger_core.client import Client
from banger_core.common.ssh import SshKeys, SshTarget, banner_ready
from banger_core.daemon import guest
from banger_core.testing import make_plugin_context
from banger_hookspecs import Disk, GuestNetConfig, NicSpec, PortForward, VmSpec

GOLDEN = "debian-bookworm"
USERNET = GuestNetConfig(address="10.0.2.15", prefix=24, gateway="10.0.2.2", dns="10.0.2.3")


def isolated_env(root: Path) -> dict[str, str]:
    """A throw-away banger environment sharing the test cache (the golden image is built once)."""
    cache = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache")) / "xdg-cache"
    # Benchmarks run in the host's namespace: their guests open no outbound connection.
    return testing.isolated_env(root, cache_home=cache, config="usernet_egress = false\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raw_boot(env: dict[str, str], image: ImageView, kernel: KernelView, work: Path, keys: SshKeys) -> float:
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
    kdir = Path(kernel.path)
    spec = VmSpec(
        vm_id="0" * 16,
        name="raw",
        kernel=kdir / "vmlinux",
        initrd=kdir / "initrd",
        cmdline=guest.kernel_cmdline("raw", USERNET),
        disks=(
            Disk(Path(image.path), True, "image"),
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


@dataclass
class Bench:
    """A running banger environment with the golden image pulled, and what a raw boot needs."""

    root: Path
    env: dict[str, str]
    client: Client
    image: ImageView
    kernel: KernelView
    keys: SshKeys

    def raw_boot(self) -> float:
        return raw_boot(self.env, self.image, self.kernel, self.root / "raw", self.keys)


@contextmanager
def bench_env(prefix: str) -> Iterator[Bench]:
    """Start an isolated daemon, pull the golden image; delete its VMs and stop it afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    env = isolated_env(root)
    client = Client(env)
    daemon_pid = None
    try:
        client.images.pull(GOLDEN)
        daemon_pid = client.daemon.status().pid
        image = client.images.get(GOLDEN)
        kernel = next(k for k in client.kernels.list() if k.ref == image.kernel_ref)
        keys = SshKeys(root / "raw-ssh")
        keys.ensure()
        yield Bench(root, env, client, image, kernel, keys)
    finally:
        if daemon_pid is not None:
            for vm in client.vms.list():
                client.vms.delete(vm.name, force=True)
            os.kill(daemon_pid, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)
