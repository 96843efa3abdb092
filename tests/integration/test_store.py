"""The image/kernel store and the network settings against a real bangerd (fake test plugin)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import NetNamespace, temporary_netns
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent
#: A hang guard, not a measurement: every call below answers in about a second when it works.
HANG = 60


def banger(h: DaemonHarness, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, str(BIN / "banger"), *args], env=h.env, capture_output=True, text=True, check=False, timeout=HANG
    )


def test_pulling_a_present_image_returns_and_later_pulls_still_work(daemon: DaemonHarness) -> None:
    first = banger(daemon, "image", "pull", "fake-tiny", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["pulled"] is True
    # The image and its kernel are present: this used to deadlock the daemon's pull lock.
    again = banger(daemon, "image", "pull", "fake-tiny", "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["pulled"] is False and data["kernel"] == "fake-kernel"
    kernel = banger(daemon, "kernel", "pull", "fake-kernel")
    assert kernel.returncode == 0, kernel.stderr
    assert "already present" in kernel.stdout
    forced = banger(daemon, "kernel", "pull", "fake-kernel", "--force")
    assert forced.returncode == 0, forced.stderr


def test_force_pull_of_an_image_in_use_is_refused_and_keeps_its_rootfs(daemon: DaemonHarness) -> None:
    client = daemon.client()
    image = client.images.pull("fake-tiny")
    client.vms.create(name="user-b", backend="fakevmm", start=False)
    client.vms.create(name="user-a", backend="fakevmm", start=False)
    rootfs = Path(image.path)
    before = (rootfs.stat().st_ino, rootfs.read_bytes())
    result = banger(daemon, "image", "pull", "fake-tiny", "--force")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        "banger: error: image 'fake-tiny' is in use by VMs user-a, user-b: delete them first "
        "(their disks are overlays on it), then pull again"
    )
    assert (rootfs.stat().st_ino, rootfs.read_bytes()) == before
    assert client.images.get("fake-tiny").sha256 == image.sha256
    # Without users the forced pull goes through.
    client.vms.delete("user-a")
    client.vms.delete("user-b")
    assert client.images.pull("fake-tiny", force=True).pulled is True
    assert rootfs.stat().st_ino != before[0]


@pytest.fixture
def netns() -> Iterator[NetNamespace]:
    with temporary_netns() as namespace:
        yield namespace


def test_bad_cidr_stops_only_the_bridge_backend(daemon: DaemonHarness, netns: NetNamespace) -> None:
    """The daemon (root, in the test's namespace) uses usernet; only a bridge VM needs cidr."""
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('default_image = "fake-tiny"\nnetwork_backend = "usernet"\ncidr = "172.16.0.0/33"\n')
    inside = tuple(netns.argv([]))
    listed = banger(daemon, "vm", "list", "--json", prefix=inside)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert banger(daemon, "image", "pull", "fake-tiny", prefix=inside).returncode == 0
    usernet = banger(daemon, "vm", "create", "--name", "slirp", "--backend", "fakevmm", "--no-start", prefix=inside)
    assert usernet.returncode == 0, usernet.stderr
    assert daemon.client().vms.get("slirp").guest_ip is None  # user-mode NICs have QEMU's fixed address
    bridged = banger(
        daemon, "vm", "create", "--name", "tapped", "--network", "bridge", "--backend", "fakevmm", "--no-start",
        prefix=inside,
    )  # fmt: skip
    assert bridged.returncode == 1
    lines = bridged.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in bridged.stderr
    assert lines[0] == (
        "banger: error: network backend 'bridge' (banger-bridge) cannot be used: "
        "cidr '172.16.0.0/33' is not an IPv4 network like 172.16.0.0/24: fix it in config.toml"
    )
    assert [vm.name for vm in daemon.client().vms.list()] == ["slirp"]


def test_reads_answer_while_another_process_holds_the_write_lock(daemon: DaemonHarness) -> None:
    """Reads used to take the write lock too: behind a writer they waited 30 s, then failed."""
    daemon.client().images.pull("fake-tiny")
    writer = sqlite3.connect(daemon.state / "banger.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE images SET version = 'uncommitted'")
        listed = banger(daemon, "vm", "list", "--json")
        images = banger(daemon, "image", "list", "--json")
        kernels = banger(daemon, "kernel", "list", "--json")
        present = banger(daemon, "image", "pull", "fake-tiny", "--json")
        assert writer.in_transaction  # every call above answered while the writer still held the lock
    finally:
        writer.execute("COMMIT")
        writer.close()
    for result in (listed, images, kernels, present):
        assert result.returncode == 0, result.stderr
    assert [image["version"] for image in json.loads(images.stdout)] == ["1"]  # the committed snapshot
    assert [kernel["ref"] for kernel in json.loads(kernels.stdout)] == ["fake-kernel"]
    assert json.loads(present.stdout)["pulled"] is False
    assert [image.version for image in daemon.client().images.list()] == ["uncommitted"]
