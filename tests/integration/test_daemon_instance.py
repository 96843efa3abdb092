"""One bangerd per state dir, whatever the runtime dir, and a `daemon stop` that ends a wedged one.

Real daemons in an isolated HOME; every process a test signals is one it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.client import DaemonUnavailable
from banger_core.client import connection as client_module
from banger_hookspecs.process import read_proc_stat, signal_process
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent


def banger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "banger", *args], env=env, capture_output=True, text=True, timeout=120)


def daemons_on(h: DaemonHarness, also: str = "") -> list[int]:
    """Live bangerd processes started with this test's data dir (never anybody else's), and ``also`` in env."""
    mine = f"XDG_DATA_HOME={h.env['XDG_DATA_HOME']}\0".encode()
    extra = f"{also}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            ours = b"banger_core.daemon" in (proc / "cmdline").read_bytes() and mine in environ and extra in environ
            if ours and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(proc.name))
        except OSError:
            continue
    return sorted(found)


@pytest.fixture
def other_runtime(daemon: DaemonHarness) -> Iterator[dict[str, str]]:
    """The daemon's environment with another XDG_RUNTIME_DIR: same state dir, another socket."""
    runtime = tempfile.mkdtemp(prefix="bgr-", dir="/tmp")
    yield {**daemon.env, "XDG_RUNTIME_DIR": runtime}
    # A daemon that got started for this runtime dir (the bug this file guards against) is ours to end.
    for pid in daemons_on(daemon, f"XDG_RUNTIME_DIR={runtime}"):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(runtime, ignore_errors=True)


def test_cli_with_another_runtime_dir_names_the_daemon_instead_of_starting_one(
    daemon: DaemonHarness, other_runtime: dict[str, str]
) -> None:
    daemon.client().vms.list()
    first = daemon.pid()
    assert first is not None
    result = banger(other_runtime, "vm", "list")
    assert result.returncode == 1
    other_socket = Path(other_runtime["XDG_RUNTIME_DIR"]) / "banger" / "bangerd.sock"
    assert result.stderr.splitlines() == [
        f"banger: error: bangerd (pid {first}) already runs for state dir {daemon.state} but listens on "
        f"{daemon.runtime / 'bangerd.sock'}, not on {other_socket} (another XDG_RUNTIME_DIR or runtime_dir): "
        "run banger with the same runtime dir, or `banger daemon stop` that daemon first"
    ]
    assert daemons_on(daemon) == [first]
    # `daemon stop` finds it through the state dir and asks it to stop on its own socket.
    stopped = banger(other_runtime, "daemon", "stop")
    assert stopped.returncode == 0 and stopped.stdout == f"bangerd (pid {first}) stopped\n"
    assert daemon.wait_gone(first) and daemons_on(daemon) == []


def test_a_second_bangerd_refuses_naming_the_first(daemon: DaemonHarness, other_runtime: dict[str, str]) -> None:
    daemon.client().vms.list()
    first = daemon.pid()
    second = subprocess.Popen(
        [sys.executable, "-m", "banger_core.daemon", "--background"],
        env=other_runtime,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = second.communicate(timeout=30)
    finally:
        if second.poll() is None:  # a second daemon runs: the bug; end the one we started
            second.kill()
            second.wait()
    assert second.returncode == 1
    assert stderr.splitlines() == [
        f"bangerd: error: another bangerd (pid {first}) already runs on state dir {daemon.state} "
        f"(listening on {daemon.runtime / 'bangerd.sock'}): `banger daemon stop` it first"
    ]
    assert daemons_on(daemon) == [first]


def test_wedged_daemon_is_named_then_stopped_with_sigterm_then_sigkill(
    daemon: DaemonHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.client().vms.list()
    wedged = daemon.pid()
    assert wedged is not None
    socket = daemon.runtime / "bangerd.sock"
    # Wedged for real: its socket is gone (as after a shutdown that hangs) and it handles no signal
    # but SIGKILL (SIGTERM stays pending while it is stopped).
    socket.unlink()
    os.kill(wedged, signal.SIGSTOP)
    try:
        # Auto-start gives a starting daemon time to answer (shortened here), then names it.
        monkeypatch.setattr(client_module, "START_TIMEOUT", 1.0)
        with pytest.raises(DaemonUnavailable) as err:
            daemon.client().vms.list()
        assert str(err.value) == (
            f"bangerd (pid {wedged}) holds state dir {daemon.state} but has not answered on {socket} for 1 s: "
            "`banger daemon stop` stops it (SIGTERM, then SIGKILL)"
        )
        assert daemons_on(daemon) == [wedged]
        status = banger(daemon.env, "daemon", "status")
        assert status.returncode == 1 and status.stdout.startswith(f"bangerd (pid {wedged}) holds the state dir")

        stopped = banger(daemon.env, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines() == [
            f"bangerd (pid {wedged}) does not answer on {socket}: sending SIGTERM",
            f"bangerd (pid {wedged}) ignored SIGTERM for 5 s: sending SIGKILL",
            f"bangerd (pid {wedged}) killed; running VMs keep running and the next daemon adopts them",
        ]
        assert daemon.wait_gone(wedged)
    finally:
        if wedged in daemons_on(daemon):
            os.kill(wedged, signal.SIGKILL)
    # The next call starts exactly one new daemon, with the state intact.
    result = banger(daemon.env, "vm", "list", "--json")
    assert result.returncode == 0 and "started the daemon" in result.stderr
    assert daemons_on(daemon) == [daemon.pid()] and daemon.pid() != wedged


def test_stop_never_signals_a_process_that_only_has_the_recorded_pid(daemon: DaemonHarness) -> None:
    """The lock records pid and start time: a record naming another process is never acted on."""
    daemon.client().vms.list()
    pid = daemon.pid()
    assert pid is not None
    lock = daemon.state / "bangerd.lock"
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        # The daemon still holds the lock, but its record now names a process that is not the daemon.
        lock.write_text(lock.read_text().replace(f'"pid": {pid},', f'"pid": {bystander.pid},'))
        stopped = banger(daemon.env, "daemon", "stop")
        assert bystander.poll() is None, "daemon stop signalled a process that is not the daemon"
        assert stopped.returncode == 0 and stopped.stdout == f"bangerd (pid {pid}) stopped\n"
        assert daemon.wait_gone(pid)
    finally:
        bystander.kill()
        bystander.wait()


def test_two_state_dirs_never_share_a_runtime_dir(daemon: DaemonHarness, tmp_path: Path) -> None:
    daemon.client().vms.list()
    first = daemon.pid()
    other_state = {**daemon.env, "XDG_DATA_HOME": str(tmp_path / "other-data")}
    second = subprocess.Popen(
        [sys.executable, "-m", "banger_core.daemon", "--background"], env=other_state, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = second.communicate(timeout=30)
    finally:
        if second.poll() is None:  # it took the first one's socket over: end the daemon we started
            second.kill()
            second.wait()
    assert second.returncode == 1
    assert stderr.splitlines() == [
        f"bangerd: error: another bangerd (pid {first}) (state dir {daemon.state}) already listens in "
        f"{daemon.runtime}: give each state dir its own runtime_dir in config.toml, or stop that daemon"
    ]
    assert daemon.client().daemon.status().pid == first  # its socket is untouched


def test_restart_when_nothing_runs_just_starts_one(daemon: DaemonHarness) -> None:
    result = banger(daemon.env, "daemon", "restart")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["bangerd is not running", f"bangerd (pid {daemon.pid()}) started"]
    assert daemons_on(daemon) == [daemon.pid()]


def test_daemon_stuck_finishing_a_boot_after_shutdown_is_never_doubled(daemon: DaemonHarness) -> None:
    """The reported failure: a stopped daemon whose socket is gone lives on in a boot thread; the
    next CLI call used to start a second daemon, whose reconcile killed the VM being booted."""
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('default_image = "fake-tiny"\nssh_ready_timeout = 600\n')  # a boot that never becomes ready
    client = daemon.client()
    client.images.pull("fake-tiny")
    first = daemon.pid()
    vmm: tuple[int, int] | None = None  # pid, start time
    creating = subprocess.Popen(
        [BIN / "banger", "vm", "create", "--name", "slow", "--backend", "fakevmm"],
        env=daemon.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            if client.vms.list() and client.vms.get("slow").pid is not None:
                break
            time.sleep(0.1)
        booting = client.vms.get("slow")
        assert booting.state == "starting" and booting.pid is not None
        proc = read_proc_stat(int(booting.pid))
        assert proc is not None
        vmm = (int(booting.pid), proc.start_time)
        client.close()
        stopping = subprocess.Popen(
            [BIN / "banger", "daemon", "stop"],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        socket = daemon.runtime / "bangerd.sock"
        for _ in range(300):  # the daemon removes its socket when it stops serving
            if not socket.exists():
                break
            time.sleep(0.05)
        assert not socket.exists() and first in daemons_on(daemon), "the daemon is not stuck as in the report"
        listing = subprocess.Popen(
            [BIN / "banger", "vm", "list", "--json"], env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        seen: set[tuple[int, ...]] = set()
        while stopping.poll() is None or listing.poll() is None:
            seen.add(tuple(daemons_on(daemon)))
            time.sleep(0.05)
        out, err = stopping.communicate()
        assert all(len(pids) <= 1 for pids in seen), f"two daemons ran at once: {seen}"
        assert stopping.returncode == 0, err
        assert out.splitlines() == [
            f"bangerd (pid {first}) is still running 15 s after the shutdown request: sending SIGTERM",
            f"bangerd (pid {first}) stopped after SIGTERM",
        ]
        assert listing.wait() == 0
        assert daemon.pid() not in (None, first)
    finally:
        creating.kill()
        creating.wait()
        if vmm is not None:  # the fake VMM we had the daemon start lives in its own session
            signal_process(*vmm, signal.SIGKILL)
