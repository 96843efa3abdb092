"""Shared e2e fixtures: the real kernel and golden image, and guests booted under QEMU TCG.

Session fixtures build the kernel (``debian`` provider) and the golden image
(``debootstrap`` source) with their plugin caches under ``$BANGER_TEST_CACHE``
(default ``/var/tmp/banger-test-cache``), so a second run, and other people's
e2e tests, reuse them: the image is rebuilt only when its recipe changes.

``launch_tcg_vm`` boots one guest the way boot protocol v1 says (image
read-only as vda, overlay vdb, work vdc) with QEMU's ``microvm`` machine under
TCG and user-mode networking forwarded to a free port on 127.0.0.1; no VMM
plugin is involved. ``bench/boot.py`` uses it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from banger_core.common import hostfacts
from banger_core.daemon import guest
from banger_core.testing import make_plugin_context
from banger_core.testing.guest import host_pattern, known_hosts_line
from banger_hookspecs import GuestNetConfig, ImageArtifact, KernelArtifact, PluginContext, SourceUnavailable

QEMU = "qemu-system-x86_64"
GOLDEN_REF = "debian-bookworm"
KERNEL_REF = "generic-6.1"
#: QEMU user-mode networking's fixed addresses.
USERNET = GuestNetConfig(address="10.0.2.15", prefix=24, gateway="10.0.2.2", dns="10.0.2.3")
BOOT_TIMEOUT = 300.0


def test_cache() -> Path:
    """``$BANGER_TEST_CACHE``, created on demand."""
    path = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


test_cache.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


class PrintingProgress:
    """A Progress that prints with timestamps (visible with ``pytest -s``, kept on failure)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()

    def _print(self, text: str) -> None:
        print(f"[{self.label} {time.monotonic() - self.start:6.1f}s] {text}", file=sys.stderr, flush=True)

    def step(self, message: str) -> None:
        self._print(message)

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        self._print(f"  {message}")


def cache_context(scratch: Path) -> PluginContext:
    """A plugin context whose cache dir lives in the test cache (state and runtime in ``scratch``)."""
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(test_cache() / "xdg-cache"),
        "XDG_DATA_HOME": str(scratch / "data"),
        "XDG_CONFIG_HOME": str(scratch / "config"),
        "XDG_RUNTIME_DIR": str(scratch / "run"),
    }
    (scratch / "run").mkdir(mode=0o700, parents=True, exist_ok=True)
    return make_plugin_context(env)


def pull_kernel(dest: Path, progress: PrintingProgress) -> KernelArtifact:
    """Pull ``generic-6.1`` with the debian provider into the empty dir ``dest``."""
    from banger_debian.kernel import DebianKernelProvider

    return DebianKernelProvider(cache_context(dest.parent / "ctx-kernel")).pull(KERNEL_REF, dest, progress)


def pull_image(ref: str, dest: Path, progress: PrintingProgress) -> ImageArtifact:
    """Pull ``ref`` with the debootstrap source (built once per recipe hash, needs root then)."""
    from banger_debootstrap.source import DebootstrapSource

    return DebootstrapSource(cache_context(dest.parent / "ctx-image")).pull(ref, dest, progress)


@pytest.fixture(scope="session")
def banger_kernel(tmp_path_factory: pytest.TempPathFactory) -> KernelArtifact:
    """The ``generic-6.1`` kernel: ELF vmlinux plus banger's initramfs (the .deb is cached)."""
    dest = tmp_path_factory.mktemp("kernel") / "generic-6.1"
    dest.mkdir()
    return pull_kernel(dest, PrintingProgress("kernel"))


@pytest.fixture(scope="session")
def golden_image(tmp_path_factory: pytest.TempPathFactory) -> ImageArtifact:
    """The golden ``debian-bookworm`` image (built on first use, then a hard link from the cache)."""
    dest = tmp_path_factory.mktemp("image") / GOLDEN_REF
    dest.mkdir()
    try:
        return pull_image(GOLDEN_REF, dest, PrintingProgress("image"))
    except SourceUnavailable as exc:  # e.g. not root and nothing cached yet
        pytest.skip(f"golden image unavailable: {exc}")


@pytest.fixture(scope="session")
def test_ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """banger's test key pair (private key path; ``.pub`` beside it)."""
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banger-test", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="session")
def qemu() -> str:
    """Path of qemu-system-x86_64 (CI installs Debian's qemu-system-x86)."""
    path = shutil.which(QEMU)
    if path is None:
        pytest.skip(f"{QEMU} is not installed: apt-get install qemu-system-x86")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ssh_banner(port: int, timeout: float = 2.0) -> bool:
    """True once the guest's sshd answers with an ``SSH-`` banner.

    With user-mode networking the TCP connect succeeds at once, before the
    guest even runs: only the banner proves sshd is there.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@dataclass
class TcgVm:
    """One guest under QEMU TCG; stop it with :meth:`stop` (fixtures do)."""

    name: str
    directory: Path
    port: int
    identity: guest.GuestIdentity
    key: Path
    known_hosts: Path
    serial_log: Path
    process: subprocess.Popen[bytes]
    started: float
    argv: list[str] = field(default_factory=list)

    def serial(self) -> str:
        """What the guest printed on its serial console so far."""
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _fail(self, why: str) -> AssertionError:
        tail = "\n".join(self.serial().splitlines()[-25:])
        return AssertionError(f"{self.name}: {why}\n--- serial console (tail) ---\n{tail}")

    def wait_for_ssh(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Wait for the SSH banner; return seconds since launch."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._fail(f"QEMU exited with {self.process.returncode} before sshd answered")
            if ssh_banner(self.port):
                return time.monotonic() - self.started
            time.sleep(0.2)
        raise self._fail(f"sshd did not answer within {timeout:.0f} s")

    def wait_for_serial(self, text: str, timeout: float = BOOT_TIMEOUT) -> float:
        """Wait until ``text`` appears on the serial console; return seconds since launch."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if text in self.serial():
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                raise self._fail(f"QEMU exited with {self.process.returncode} before {text!r} appeared")
            time.sleep(0.2)
        raise self._fail(f"{text!r} did not appear on the serial console within {timeout:.0f} s")

    def ssh_argv(self, *, known_hosts: Path | None = None, extra: Sequence[str] = ()) -> list[str]:
        """ssh argv to root@ this VM, strict host key checking against the pinned key."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-p",
            str(self.port),
            "-o",
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=30",
            *extra,
            "root@127.0.0.1",
        ]

    def ssh(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the guest (quoted with shlex) and return the result."""
        result = subprocess.run(
            [*self.ssh_argv(), shlex.join(argv)], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise self._fail(f"ssh {shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def power_button(self) -> None:
        """Press the ACPI power button through QMP (``system_powerdown``), as the qemu backend does."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.directory / "qmp"))
            reader = sock.makefile("rb")
            reader.readline()  # greeting
            for command in ("qmp_capabilities", "system_powerdown"):
                sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
                while True:  # skip asynchronous events until the command's answer
                    answer = json.loads(reader.readline())
                    if "return" in answer or "error" in answer:
                        break
                if "error" in answer:
                    raise AssertionError(f"QMP {command} failed: {answer['error']}")

    def wait_for_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for QEMU to exit on its own; its exit code, or None."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10) -> None:
        """Kill this VM's QEMU (our own child, by pid) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def qemu_argv(
    kernel: KernelArtifact,
    image: Path,
    overlay: Path,
    work: Path,
    cmdline: str,
    serial_log: Path,
    port: int,
    qmp_socket: Path,
) -> list[str]:
    """QEMU microvm under TCG with the three protocol-v1 disks and a loopback ssh forward."""
    return [
        QEMU,
        "-M",
        "microvm",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "1024",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",  # a guest reboot (or panic) ends the VM instead of looping
        "-kernel",
        str(kernel.vmlinux),
        "-initrd",
        str(kernel.initrd),
        "-append",
        cmdline,
        "-serial",
        f"file:{serial_log}",
        "-qmp",
        f"unix:{qmp_socket},server=on,wait=off",
        "-drive",
        f"id=image,file={image},format=raw,if=none,readonly=on",
        "-device",
        "virtio-blk-device,drive=image",
        "-drive",
        f"id=overlay,file={overlay},format=raw,if=none",
        "-device",
        "virtio-blk-device,drive=overlay",
        "-drive",
        f"id=work,file={work},format=raw,if=none",
        "-device",
        "virtio-blk-device,drive=work",
        "-netdev",
        # restrict=on: these guests run in the host's namespace and must send nothing off the machine.
        f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-device,netdev=net0",
    ]


def launch_tcg_vm(
    name: str,
    kernel: KernelArtifact,
    image: Path,
    directory: Path,
    key: Path,
    *,
    work_files: dict[str, str] | None = None,
    quiet: bool = True,
    cmdline_extra: Sequence[str] = (),
    mangle_cmdline: Callable[[str], str] | None = None,
) -> TcgVm:
    """Create a VM's identity and disks with :mod:`banger_core.daemon.guest` and boot it under QEMU TCG."""
    directory.mkdir(parents=True)
    identity = guest.new_identity(name)
    guest.create_overlay_disk(directory / "overlay.ext4", 4 << 30, identity)
    with tempfile.TemporaryDirectory(prefix="banger-work-") as staging:
        guest.stage_authorized_keys(Path(staging), key.with_suffix(".pub").read_text())
        for relative, content in (work_files or {}).items():
            (Path(staging) / relative).write_text(content)
        guest.create_work_disk(directory / "work.ext4", 1 << 30, Path(staging))
    port = free_port()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(known_hosts_line([host_pattern("127.0.0.1", port)], identity))
    extra = list(cmdline_extra)
    tsc = hostfacts.tsc_khz()
    if tsc:
        extra.append(f"tsc_early_khz={tsc}")  # microvm under TCG can hang calibrating the TSC without it
    extra.append("reboot=t")
    cmdline = guest.kernel_cmdline(name, USERNET, extra, quiet=quiet)
    if mangle_cmdline is not None:  # tests of the initramfs's error paths
        cmdline = mangle_cmdline(cmdline)
    serial_log = directory / "serial.log"
    argv = qemu_argv(
        kernel, image, directory / "overlay.ext4", directory / "work.ext4", cmdline, serial_log, port, directory / "qmp"
    )
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return TcgVm(name, directory, port, identity, key, known_hosts, serial_log, process, time.monotonic(), argv)


@pytest.fixture
def tcg_vms(tmp_path: Path) -> Iterator[list[TcgVm]]:
    """A list the test appends launched VMs to; every one is stopped afterwards, pass or fail."""
    vms: list[TcgVm] = []
    try:
        yield vms
    finally:
        for vm in vms:
            with contextlib.suppress(Exception):
                vm.stop()
