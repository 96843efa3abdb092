"""Shared pieces of the VM benchmarks: an isolated banger environment and a raw QEMU boot."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from banger_core import guest
from banger_core.ssh import SshKeys, SshTarget, banner_ready
from banger_core.testing import make_plugin_context
from banger_hookspecs import Disk, GuestNetConfig, NicSpec, PortForward, VmSpec

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
