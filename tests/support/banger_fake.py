"""A third-party-style test plugin: tiny images, placeholder kernels, a stand-in VMM.

Installed for daemon tests through a fake ``.dist-info`` (see ``fake_plugin_env``),
exactly like ``pip install`` would. The VMM it "launches" is a real child
process (``tests.support.fake_vmm``; tests/support/dists/fake-testplugin packages
both as a real distribution) that answers on a control socket, so the
daemon's adopt/demote logic runs against real processes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from banger_hookspecs import (
    Availability,
    ImageArtifact,
    ImageListing,
    ImageSource,
    KernelArtifact,
    KernelProvider,
    PluginContext,
    Progress,
    VmmBackend,
    VmProcess,
    VmSpec,
    hookimpl,
)
from banger_hookspecs.logpump import SERIAL_LOG_MAX_BYTES, start_log_pump

#: Console output of a ``chatty*`` fake VM: more than two serial log files' worth.
CHATTY_BYTES = 2 * SERIAL_LOG_MAX_BYTES + 12345
#: ``fake-download`` reports this many chunks of this size while it "downloads".
DOWNLOAD_CHUNKS = 150
DOWNLOAD_CHUNK_BYTES = 64 * 1024
#: ``fake-gated`` waits (at most this long) until the file ``$BANGER_TEST_GATE`` names exists.
GATE_TIMEOUT = 30.0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakeImages:
    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    def claims(self, ref: str) -> bool:
        return ref.startswith("fake-")

    def available(self) -> list[ImageListing]:
        return [ImageListing("fake-tiny", "an 8 MiB ext4 for tests", "fake")]

    def pull(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        if ref == "fake-broken":
            raise RuntimeError("the fake source breaks on purpose")
        if ref == "fake-download":
            self._pretend_download(ref, progress)
        if ref == "fake-gated":  # a pull that stays in progress until the test lets it go on
            deadline = time.monotonic() + GATE_TIMEOUT
            while not Path(os.environ["BANGER_TEST_GATE"]).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        progress.step("making a tiny ext4")
        content = dest / "content"
        (content / "etc").mkdir(parents=True)
        (content / "etc" / "hostname").write_text("fake\n")
        rootfs = dest / "rootfs.ext4"
        subprocess.run(
            ["/usr/sbin/mkfs.ext4", "-q", "-F", "-d", str(content), str(rootfs), "8M"], check=True, capture_output=True
        )
        for item in sorted(content.rglob("*"), reverse=True):
            item.unlink() if item.is_file() else item.rmdir()
        content.rmdir()
        return ImageArtifact(ref, "1", rootfs, "fake-kernel", sha256(rootfs), rootfs.stat().st_size, {})

    def _pretend_download(self, ref: str, progress: Progress) -> None:
        """Byte progress as a real download reports it: one advance per chunk, with the total."""
        progress.step(f"downloading {ref}")
        for chunk in range(1, DOWNLOAD_CHUNKS + 1):
            time.sleep(0.01)  # long enough for a terminal's live line to be drawn between chunks
            progress.advance(chunk * DOWNLOAD_CHUNK_BYTES, DOWNLOAD_CHUNKS * DOWNLOAD_CHUNK_BYTES)


class FakeKernels:
    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    def claims(self, ref: str) -> bool:
        return ref == "fake-kernel"

    def pull(self, ref: str, dest: Path, progress: Progress) -> KernelArtifact:
        (dest / "vmlinux").write_bytes(b"\x7fELF not a kernel")
        (dest / "initrd").write_bytes(b"not an initrd")
        return KernelArtifact(ref, "0.0", dest / "vmlinux", dest / "initrd", 1, {"vmlinux": sha256(dest / "vmlinux")})


def start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(path)
            return sock.recv(4) == b"pong"
    except OSError:
        return False


class FakeVmm:
    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    def availability(self) -> Availability:
        return Availability(True, 1, "the fake VMM runs anywhere", "fake 1.0")

    def launch(self, spec: VmSpec, progress: Progress) -> VmProcess:
        sock = str(spec.run_dir / "ctl.sock")
        # Like the real backends: the console goes through the capped log pump.
        serial = start_log_pump(spec.serial_log)
        try:
            proc = spawn(sock, stdout=serial, chatter=CHATTY_BYTES if spec.name.startswith("chatty") else 0)
        finally:
            os.close(serial)
        return VmProcess("fakevmm", proc, start_time(proc) or 0, sock)

    def is_running(self, proc: VmProcess) -> bool:
        return start_time(proc.pid) == proc.start_time and answers(proc.control_socket)

    def stop(self, proc: VmProcess, timeout: float) -> None:
        self.kill(proc)

    def kill(self, proc: VmProcess) -> None:
        if start_time(proc.pid) == proc.start_time:
            os.kill(proc.pid, signal.SIGKILL)


def spawn(control_socket: str, stdout: int = subprocess.DEVNULL, chatter: int = 0) -> int:
    """Start a stand-in VMM process (own session, like a real one) and wait until it answers.

    ``chatter`` bytes of console output go to ``stdout`` first (VMs named ``chatty*``).
    """
    proc = subprocess.Popen(
        # Its sibling module: tests.support.fake_vmm here, banger_fake_testplugin.fake_vmm when installed.
        [sys.executable, "-m", f"{__package__}.fake_vmm", control_socket, str(chatter)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if answers(control_socket):
            return proc.pid
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the fake VMM did not come up")


@hookimpl
def banger_image_sources() -> Iterable[ImageSource]:
    return [ImageSource("fake", "tiny test images", FakeImages, priority=5)]


@hookimpl
def banger_kernel_providers() -> Iterable[KernelProvider]:
    return [KernelProvider("fake", "placeholder kernels", FakeKernels, priority=5)]


@hookimpl
def banger_vmm_backends() -> Iterable[VmmBackend]:
    return [VmmBackend("fakevmm", "a stand-in VMM process", FakeVmm)]
