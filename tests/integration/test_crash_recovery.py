"""Crash recovery: SIGKILL bangerd at each step of create / pull / delete / ``--rm`` session.

Each test starts a real daemon with ``BANGER_TESTING=1 BANGER_TEST_CRASH_AT=<step>``
(:mod:`banger_core.daemon.crashpoint`), so it kills itself exactly there, then lets
the next CLI call start a clean daemon and checks what reconcile made of the
leftovers: nothing half-made is left behind, nothing the user may still want
is deleted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from banger_core.api.requests import CreateRequest
from banger_core.client import Client, DaemonUnavailable
from tests.integration.test_daemon import banger, prepare
from tests.support import banger_fake
from tests.support.daemon import DaemonHarness


def crash_at(
    h: DaemonHarness,
    step: str,
    operation: Callable[[Client], Any],
    raises: type[Exception] = DaemonUnavailable,
) -> None:
    """Run ``operation`` against a daemon that SIGKILLs itself at ``step``; the next call gets a clean daemon."""
    h.stop()
    h.env["BANGER_TESTING"] = "1"
    h.env["BANGER_TEST_CRASH_AT"] = step
    try:
        client = h.client()
        client.vms.list()  # start the daemon that will crash
        pid = h.pid()
        assert pid is not None
        with pytest.raises(raises):
            operation(client)
        assert h.wait_gone(pid), f"bangerd did not die at {step}"
        wait_socket_dead(h)
    finally:
        del h.env["BANGER_TEST_CRASH_AT"]
        del h.env["BANGER_TESTING"]


def wait_socket_dead(h: DaemonHarness) -> None:
    """A SIGKILLed process is a zombie before its last thread has let go of its files: wait for the socket."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(h.runtime / "bangerd.sock"))
            except (ConnectionRefusedError, FileNotFoundError):
                return
        time.sleep(0.05)
    raise AssertionError("the killed daemon's socket still accepts connections")


def daemon_log(h: DaemonHarness) -> str:
    return (h.state / "logs" / "bangerd.log").read_text()


def vm_dirs(h: DaemonHarness) -> list[str]:
    vms = h.state / "vms"
    return sorted(p.name for p in vms.iterdir()) if vms.exists() else []


def vmm_pid_of(h: DaemonHarness, vm_id: str) -> int:
    handles = json.loads((h.state / "vms" / vm_id / "handles.json").read_text())
    return int(handles["vmm"]["pid"])


def only_vm(h: DaemonHarness) -> dict[str, Any]:
    """The one VM record in the database, read without a daemon (the crashed one has no successor yet)."""
    import sqlite3

    with sqlite3.connect(h.state / "banger.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM vms")]
    assert len(rows) == 1, rows
    return rows[0]


def process_gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def vmm_pids() -> Iterator[list[int]]:
    """Fake VMM pids a test saw; killed at the end if a failing test left them running."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


# -- create ------------------------------------------------------------------


def test_crash_right_after_the_create_record_leaves_nothing(daemon: DaemonHarness) -> None:
    prepare(daemon)
    crash_at(daemon, "create:recorded", lambda c: c.vms.create(name="half", backend="fakevmm", start=False))
    assert only_vm(daemon)["state"] == "created"  # what the crash left: a record, no disks
    assert daemon.client().vms.list() == []
    assert vm_dirs(daemon) == []
    assert "deleted: its directory is gone: a create or a delete was interrupted" in daemon_log(daemon)
    # The name is free again.
    assert daemon.client().vms.create(name="half", backend="fakevmm", start=False).state == "created"


def test_crash_after_the_disks_keeps_the_finished_vm(daemon: DaemonHarness) -> None:
    prepare(daemon)
    crash_at(daemon, "create:disks", lambda c: c.vms.create(name="whole", backend="fakevmm", start=False))
    vm = daemon.client().vms.get("whole")
    assert vm.state == "created" and vm.last_error is None
    vm_dir = daemon.state / "vms" / vm.id
    assert sorted(p.name for p in vm_dir.iterdir()) == ["agent.token", "overlay.ext4", "work.ext4"]


def test_crash_while_starting_stops_the_vmm_and_keeps_the_disks(daemon: DaemonHarness, vmm_pids: list[int]) -> None:
    prepare(daemon)
    crash_at(daemon, "start:launched", lambda c: c.vms.create(name="booting", backend="fakevmm"))
    row = only_vm(daemon)
    vmm_pids.append(vmm_pid_of(daemon, row["id"]))
    assert not process_gone(vmm_pids[0]), "the VMM outlives its daemon"
    vm = daemon.client().vms.get("booting")
    assert vm.state == "stopped"
    assert vm.last_error == "the daemon stopped while it was starting; the VM was stopped"
    assert process_gone(vmm_pids[0])
    vm_dir = daemon.state / "vms" / vm.id
    assert (vm_dir / "overlay.ext4").exists() and (vm_dir / "work.ext4").exists()


# -- --rm --------------------------------------------------------------------


def test_crash_while_an_rm_vm_boots_deletes_it_and_its_vmm(daemon: DaemonHarness, vmm_pids: list[int]) -> None:
    prepare(daemon)
    crash_at(daemon, "start:launched", lambda c: c.vms.create(name="fleeting", backend="fakevmm", remove_on_exit=True))
    row = only_vm(daemon)
    vmm_pids.append(vmm_pid_of(daemon, row["id"]))
    assert daemon.client().vms.list() == []
    assert process_gone(vmm_pids[0])
    assert vm_dirs(daemon) == []
    assert f"VM fleeting (id {row['id']}) deleted: it was a --rm VM whose session ended" in daemon_log(daemon)


def _rm_session(client: Client, name: str) -> Iterator[str]:
    """An ``--rm`` session on a created (not booted) VM: the fake VMM never becomes ssh-ready."""
    body = CreateRequest(name=name, backend="fakevmm", start=False, remove_on_exit=True)
    with client.raw_stream("/v1/vms", method="POST", body=body) as response:
        yield from response.iter_lines()


def test_crash_during_an_rm_session_deletes_the_vm_at_the_next_start(daemon: DaemonHarness) -> None:
    prepare(daemon)
    crash_at(daemon, "session:held", lambda c: list(_rm_session(c, "ephemeral")), raises=httpx.RemoteProtocolError)
    assert only_vm(daemon)["remove_on_exit"] == 1
    assert daemon.client().vms.list() == []
    assert vm_dirs(daemon) == []


def test_stale_rm_cleanup_never_deletes_a_new_vm_with_the_same_name(daemon: DaemonHarness) -> None:
    prepare(daemon)
    client = daemon.client()
    session = _rm_session(client, "reused")
    for line in session:
        if json.loads(line).get("event") == "result":
            break
    old_id = client.vms.get("reused").id
    # While the session is open, the user deletes the VM and makes a new one with the same name.
    client.vms.delete("reused", force=True)
    new = client.vms.create(name="reused", backend="fakevmm", start=False)
    session.close()  # the session ends: its cleanup must only ever touch the old VM
    deadline = time.monotonic() + 30
    while f"VM reused (id {old_id}) was already deleted" not in daemon_log(daemon):
        if not any(vm.name == "reused" for vm in client.vms.list()):
            break  # the stale cleanup took the new VM: fails below
        assert time.monotonic() < deadline, "the session's cleanup never ran"
        time.sleep(0.1)
    assert [vm.id for vm in client.vms.list()] == [new.id]


def test_rm_vm_kept_for_inspection_survives_a_daemon_crash(daemon: DaemonHarness) -> None:
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('default_image = "fake-tiny"\nssh_ready_timeout = 2\n')
    prepare(daemon)
    result = banger(daemon, "vm", "run", "--rm", "--name", "sulky", "--backend", "fakevmm", "--", "true")
    assert result.returncode == 1 and "was kept for inspection" in result.stderr
    pid = daemon.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert daemon.wait_gone(pid)
    wait_socket_dead(daemon)
    vm = daemon.client().vms.get("sulky")
    assert vm.state == "error" and vm.remove_on_exit is False


# -- delete ------------------------------------------------------------------


def test_crash_after_halting_a_vm_for_delete_keeps_it_whole(daemon: DaemonHarness) -> None:
    prepare(daemon)
    vm = daemon.client().vms.create(name="doomed", backend="fakevmm", start=False)
    crash_at(daemon, "delete:halted", lambda c: c.vms.delete("doomed", force=True))
    after = daemon.client().vms.get("doomed")
    assert after.state == "created"
    assert sorted(p.name for p in (daemon.state / "vms" / vm.id).iterdir()) == [
        "agent.token",
        "overlay.ext4",
        "work.ext4",
    ]
    daemon.client().vms.delete("doomed")
    assert daemon.client().vms.list() == [] and vm_dirs(daemon) == []


def test_crash_after_removing_the_files_finishes_the_delete(daemon: DaemonHarness) -> None:
    prepare(daemon)
    vm = daemon.client().vms.create(name="doomed", backend="fakevmm", start=False)
    crash_at(daemon, "delete:files-removed", lambda c: c.vms.delete("doomed"))
    assert only_vm(daemon)["id"] == vm.id  # the record outlived its files
    assert daemon.client().vms.list() == []
    assert vm_dirs(daemon) == []
    assert f"VM doomed (id {vm.id}) deleted: its directory is gone" in daemon_log(daemon)


def test_a_half_removed_vm_directory_is_finished_not_resurrected(daemon: DaemonHarness) -> None:
    prepare(daemon)
    vm = daemon.client().vms.create(name="doomed", backend="fakevmm", start=False)
    daemon.stop()
    # What a crash inside the recursive removal leaves: the renamed directory, partly emptied.
    vm_dir = daemon.state / "vms" / vm.id
    doomed = vm_dir.with_name(f".deleting-{vm.id}")
    vm_dir.rename(doomed)
    (doomed / "overlay.ext4").unlink()
    assert daemon.client().vms.list() == []
    assert vm_dirs(daemon) == []


# -- pull ----------------------------------------------------------------------


def image_dirs(h: DaemonHarness) -> list[str]:
    return sorted(p.name for p in (h.state / "images").iterdir())


def test_crash_with_a_staged_first_pull_leaves_no_staging_dir(daemon: DaemonHarness) -> None:
    crash_at(daemon, "pull:staged", lambda c: c.images.pull("fake-tiny"))
    assert [p for p in image_dirs(daemon) if p.startswith(".staging-")]  # the crash left one
    assert daemon.client().images.list() == []
    assert image_dirs(daemon) == []
    assert daemon.client().images.pull("fake-tiny").pulled is True


@pytest.mark.parametrize("step", ["pull:swapping", "pull:replaced"])
def test_crash_while_replacing_an_image_never_loses_it(daemon: DaemonHarness, step: str) -> None:
    prepare(daemon)
    rootfs = daemon.state / "images" / "fake-tiny" / "rootfs.ext4"
    crash_at(daemon, step, lambda c: c.images.pull("fake-tiny", force=True))
    assert any(p.startswith(".old-") for p in image_dirs(daemon))  # the crash hit inside the swap
    [image] = daemon.client().images.list()
    assert image.name == "fake-tiny"
    assert image_dirs(daemon) == ["fake-tiny"]
    assert rootfs.is_file() and banger_fake.sha256(rootfs)
    # The image still works: a VM can be made from it.
    assert daemon.client().vms.create(name="user", backend="fakevmm", start=False).state == "created"


def test_recover_restores_a_set_aside_image(daemon: DaemonHarness) -> None:
    """The exact window the brief names: final gone, ``.old-NAME`` complete, database row present."""
    prepare(daemon)
    daemon.stop()
    images = daemon.state / "images"
    before = banger_fake.sha256(images / "fake-tiny" / "rootfs.ext4")
    (images / "fake-tiny").rename(images / ".old-fake-tiny")
    [image] = daemon.client().images.list()
    assert image.name == "fake-tiny"
    assert banger_fake.sha256(images / "fake-tiny" / "rootfs.ext4") == before
    assert image_dirs(daemon) == ["fake-tiny"]


def test_a_create_killed_inside_mkfs_is_removed(daemon: DaemonHarness) -> None:
    prepare(daemon)
    vm = daemon.client().vms.create(name="partial", backend="fakevmm", start=False)
    daemon.stop()
    # What a crash while mkfs wrote the work disk leaves: the overlay and a partial work disk.
    vm_dir = daemon.state / "vms" / vm.id
    (vm_dir / "work.ext4").rename(vm_dir / ".work.ext4.partial")
    assert daemon.client().vms.list() == []
    assert vm_dirs(daemon) == []
    assert "VM partial (id " in daemon_log(daemon) and "its create was interrupted" in daemon_log(daemon)
