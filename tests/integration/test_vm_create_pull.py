"""`banger vm create` pulls a missing image first, as `vm run` does (and `docker create`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent


def banger(h: DaemonHarness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "banger", *args], env=h.env, capture_output=True, text=True, timeout=120)


def test_create_pulls_the_missing_image_with_the_pull_progress(daemon: DaemonHarness) -> None:
    created = banger(daemon, "vm", "create", "--name", "fresh", "--backend", "fakevmm", "--no-start")
    assert created.returncode == 0, created.stderr
    client = daemon.client()
    assert [image.name for image in client.images.list()] == ["fake-tiny"]
    assert client.vms.get("fresh").image == "fake-tiny"
    # The pull's own steps, as `vm run` shows them, before the create's.
    assert "==> making a tiny ext4" in created.stderr
    assert created.stderr.index("==> making a tiny ext4") < created.stderr.index("spec: ")
    again = banger(daemon, "vm", "create", "--name", "second", "--backend", "fakevmm", "--no-start")
    assert again.returncode == 0 and "making a tiny ext4" not in again.stderr


def test_create_with_an_image_that_cannot_be_pulled_creates_nothing(daemon: DaemonHarness) -> None:
    failed = banger(daemon, "vm", "create", "--image", "fake-broken", "--backend", "fakevmm", "--no-start")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        "banger: error: image source fake failed to get fake-broken: RuntimeError: the fake source breaks on purpose"
    )
    assert daemon.client().vms.list() == [] and daemon.client().images.list() == []
