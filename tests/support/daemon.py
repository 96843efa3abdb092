"""A real bangerd for tests: its own HOME/XDG dirs, the fake plugin installed, killed by pid at the end."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger_core.client import Client
from banger_core.common import instance, paths
from banger_core.testing import FakeSite

REPO = Path(__file__).resolve().parents[2]


@dataclass
class DaemonHarness:
    env: dict[str, str]

    @property
    def runtime(self) -> Path:
        return paths.runtime_dir(self.env)

    @property
    def state(self) -> Path:
        return Path(self.env["XDG_DATA_HOME"]) / "banger"

    def client(self, *, autostart: bool = True) -> Client:
        return Client(self.env, autostart=autostart)

    def pid(self) -> int | None:
        """The pid of the daemon holding the state-dir lock, if that process lives."""
        holder = instance.lock_holder(self.state / instance.LOCK_NAME)
        if holder is None or holder.pid is None:
            return None
        return holder.pid if _is_daemon(holder.pid) else None

    def wait_gone(self, pid: int, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        if not self.wait_gone(pid):
            os.kill(pid, signal.SIGKILL)
            self.wait_gone(pid)


def _is_daemon(pid: int) -> bool:
    try:
        return b"banger_core.daemon" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def install_fake_plugin(site: FakeSite) -> None:
    site.write_dist_info("banger-fake-testplugin", "0.0.1", {"fake": "tests.support.banger_fake"})


@pytest.fixture
def daemon(banger_env: dict[str, str], banger_site: FakeSite) -> Iterator[DaemonHarness]:
    """Environment for a real daemon with the fake test plugin; the daemon is stopped afterwards."""
    install_fake_plugin(banger_site)
    env = dict(banger_env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(banger_site.root)])
    config = Path(env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('default_image = "fake-tiny"\n')
    harness = DaemonHarness(env)
    try:
        yield harness
    finally:
        harness.stop()
