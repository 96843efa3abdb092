"""A real daemon with the real plugins for e2e tests: guests boot under QEMU (TCG here).

The image and kernel come through the normal pull path with the plugins'
caches under ``$BANGER_TEST_CACHE`` (the golden image is built once per recipe,
then hard-linked), so a session pays for a build only on a fresh machine.
Everything the tests start is stopped at the end: VMs are deleted through
banger, the daemon is stopped by pid, and any VMM process left with this
session's state dir on its command line is killed by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from banger_core.testing import isolated_env
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent
GOLDEN = "debian-bookworm"
CLI_TIMEOUT = 600


def test_cache() -> Path:
    path = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


test_cache.__test__ = False  # type: ignore[attr-defined]


@dataclass
class E2E(DaemonHarness):
    """A daemon environment plus helpers to drive the real CLI."""

    root: Path = field(default_factory=Path)
    #: Wraps every CLI call, e.g. ``["ip", "netns", "exec", NAME]`` to run CLI and daemon in a namespace.
    prefix: list[str] = field(default_factory=list)

    def banger(
        self, *args: str, check: bool = False, timeout: float = CLI_TIMEOUT, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.prefix, str(BIN / "banger"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"banger {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def vms(self) -> list[dict[str, object]]:
        data: list[dict[str, object]] = json.loads(self.banger("vm", "list", "--json", check=True).stdout)
        return data

    def vm(self, name: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.banger("vm", "show", name, "--json", check=True).stdout)
        return data

    def ssh(self, name: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.banger("vm", "ssh", name, "--", *command, timeout=120)

    def wait_for(self, predicate: object, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def cleanup(self) -> None:
        """Delete every VM, stop the daemon, kill any VMM of ours that survived."""
        try:
            if self.pid() is not None:
                for vm in self.vms():
                    self.banger("vm", "delete", "--force", str(vm["name"]), timeout=120)
        except Exception as exc:  # never let cleanup hide the real failure
            print(f"e2e cleanup: {exc}", file=sys.stderr)
        self.stop()
        for pid in vmm_pids(self.state):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def pids_whose_cmdline(match: Callable[[bytes], bool]) -> list[int]:
    """Processes whose NUL-separated command line satisfies ``match`` (vanished ones are skipped)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if match(cmdline):
            pids.append(int(proc.name))
    return pids


def vmm_pids(state_dir: Path) -> list[int]:
    """VMM processes whose command line mentions ``state_dir`` (only ever this session's)."""
    needle = str(state_dir).encode()
    return pids_whose_cmdline(lambda cmd: needle in cmd and (b"qemu-system" in cmd or b"firecracker" in cmd))


def make_env(root: Path, config: str = "") -> dict[str, str]:
    """An isolated environment sharing the test cache (golden image, kernel package)."""
    return isolated_env(root, cache_home=test_cache() / "xdg-cache", config=config)


@pytest.fixture(scope="session")
def e2e_config_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session root; its home holds a file that a ``file_sync`` entry copies into every VM."""
    root = tmp_path_factory.mktemp("e2e")
    home = root / "home"
    (home / "dotfiles").mkdir(parents=True)
    (home / "dotfiles" / "gitconfig").write_text("[user]\n\tname = e2e\n")
    return root


# usernet_egress = false: the shared session's guests run in the host's network namespace, where
# nothing may leave the machine (tests of egress run in a namespace of their own).
E2E_CONFIG = """\
ssh_ready_timeout = 420
usernet_egress = false
warm_auto = false

[[file_sync]]
host = "~/dotfiles/gitconfig"
guest = "~/.gitconfig"
mode = "0640"
"""


@pytest.fixture(scope="session")
def e2e(e2e_config_files: Path) -> Iterator[E2E]:
    """One daemon for the session, the golden image and its kernel pulled (usernet, QEMU TCG)."""
    if os.geteuid() != 0:
        pytest.skip("e2e tests build the golden image with debootstrap, which needs root")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed: apt-get install qemu-system-x86")
    env = make_env(e2e_config_files, E2E_CONFIG)
    harness = E2E(env=env, root=e2e_config_files)
    try:
        harness.banger("image", "pull", GOLDEN, check=True, timeout=3600)
        yield harness
    finally:
        harness.cleanup()
        shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)
