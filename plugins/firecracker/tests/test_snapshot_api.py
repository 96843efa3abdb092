"""Firecracker's snapshot API (warm starts) against the real binary (v1.12.1 fixture).

Guests cannot run on this lab's PVM hosts, so these tests drive the calls as
far as a guestless host allows and assert what Firecracker itself answers and
writes: a paused microVM's full snapshot (state file + memory file the size of
guest memory), a load into a fresh process, and the refusals. The design for a
hardware-KVM host is in docs/warm-start.md.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress
from banger_firecracker.api import FirecrackerApi, FirecrackerApiError
from banger_firecracker.driver import FirecrackerDriver
from banger_hookspecs import PluginContext

pytestmark = pytest.mark.integration


def start_bare_firecracker(binary: str, run_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A fresh Firecracker process with nothing configured: the only state that accepts a snapshot load."""
    socket = run_dir / "load.sock"
    log = run_dir / "load.log"
    with log.open("wb") as out:
        popen = subprocess.Popen([binary, "--api-sock", str(socket), "--id", "restored"], stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline and popen.poll() is None:
        time.sleep(0.02)
    assert socket.exists(), log.read_text()
    return popen, socket


@pytest.fixture
def bare_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for popen in started:
        popen.kill()
        popen.wait()


def test_full_snapshot_of_a_paused_microvm_loads_into_a_fresh_process(
    plugin_context: PluginContext, firecracker_binaries, guest_spec, launched, bare_processes, tmp_path: Path
) -> None:
    binary = firecracker_binaries.firecracker
    config = {**plugin_context.config, "firecracker_bin": binary}
    driver = FirecrackerDriver(dataclasses.replace(plugin_context, config=config))
    spec = guest_spec()
    proc = driver.launch(spec, RecordingProgress())
    launched.append((driver, proc))
    state, memory = tmp_path / "state", tmp_path / "memory"
    with FirecrackerApi(Path(proc.control_socket), timeout=60) as api:
        assert api.get("/")["state"] == "Running"
        # A running microVM is not snapshotted: Firecracker insists on a pause first.
        with pytest.raises(FirecrackerApiError, match=r"^Firecracker refused PUT /snapshot/create: "):
            api.create_snapshot(state, memory)
        api.pause()
        assert api.get("/")["state"] == "Paused"
        api.create_snapshot(state, memory)
    # A full snapshot: all of guest memory in one file, the device and vCPU state in the other.
    assert memory.stat().st_size == spec.memory_mib << 20
    assert 0 < state.stat().st_size < 1 << 20

    popen, socket = start_bare_firecracker(binary, tmp_path)
    bare_processes.append(popen)
    with FirecrackerApi(socket, timeout=60) as api:
        api.load_snapshot(state, memory, resume=False)
        assert api.get("/")["state"] == "Paused"  # loaded paused: banger gives it its identity after resume
        api.resume()
        assert api.get("/")["state"] == "Running"
    log = (tmp_path / "load.log").read_text()
    assert "'load snapshot' VMM action took" in log
    assert '"snapshot_path":"' + str(state) + '"' in log.replace("\\", "")  # the exact body Firecracker got


def test_a_load_is_refused_once_the_process_is_configured_and_for_missing_files(
    firecracker_binaries, bare_processes, tmp_path: Path
) -> None:
    binary = firecracker_binaries.firecracker
    popen, socket = start_bare_firecracker(binary, tmp_path)
    bare_processes.append(popen)
    with FirecrackerApi(socket, timeout=30) as api:
        api.put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})
        with pytest.raises(FirecrackerApiError) as configured:
            api.load_snapshot(tmp_path / "state", tmp_path / "memory", resume=True)
    assert str(configured.value) == (
        "Firecracker refused PUT /snapshot/load: Load snapshot error: "
        "Loading a microVM snapshot not allowed after configuring boot-specific resources."
    )
    (tmp_path / "load.sock").unlink(missing_ok=True)
    popen2, socket2 = start_bare_firecracker(binary, tmp_path)
    bare_processes.append(popen2)
    with FirecrackerApi(socket2, timeout=30) as api, pytest.raises(FirecrackerApiError) as missing:
        api.load_snapshot(tmp_path / "no-state", tmp_path / "no-memory", resume=True)
    assert str(missing.value) == (
        "Firecracker refused PUT /snapshot/load: Load snapshot error: Failed to restore from snapshot: "
        "Failed to get snapshot state from file: Failed to open snapshot file: No such file or directory (os error 2)"
    )
