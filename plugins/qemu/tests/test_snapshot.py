"""QEMU save/restore (warm starts) through the driver: a real kernel and the busybox test initramfs under TCG.

Marked e2e (real guests boot). Every test kills what it launched, also on failure.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress
from banger_hookspecs import PluginContext, VmmSnapshots, VmProcess
from banger_hookspecs.process import is_same_process
from banger_qemu.driver import QemuDriver, QemuLaunchError
from banger_qemu.probe import find_binary, qemu_version
from banger_qemu.qmp import QmpClient

pytestmark = pytest.mark.e2e


@pytest.fixture
def driver(plugin_context: PluginContext) -> Iterator[tuple[QemuDriver, list[VmProcess]]]:
    """A qemu driver and the processes a test started with it, killed at teardown."""
    qemu = QemuDriver(plugin_context)
    started: list[VmProcess] = []
    yield qemu, started
    for proc in started:
        qemu.kill(proc)
        assert not is_same_process(proc.pid, proc.start_time)


def test_a_saved_guest_resumes_in_a_new_qemu_from_copies_of_its_disks(
    driver, guest_spec, serial_waiter, markers, run_dir: Path, tmp_path: Path
) -> None:
    qemu, started = driver
    guest_up, power_button = markers
    assert isinstance(qemu, VmmSnapshots)
    spec = guest_spec()
    proc = qemu.launch(spec, RecordingProgress())
    started.append(proc)
    serial_waiter(spec.serial_log, guest_up)

    state = tmp_path / "state with 'quote"  # opened by the daemon: QEMU never sees (or spawns a shell for) the path
    qemu.save_snapshot(proc, state)
    assert not is_same_process(proc.pid, proc.start_time)  # the template's QEMU is gone
    assert state.stat().st_size > spec.memory_mib << 10  # at least the touched RAM, well above 0

    copies = tmp_path / "copies"
    copies.mkdir()
    disks = list(spec.disks)
    for index in (1, 2):
        copy = copies / disks[index].path.name
        shutil.copyfile(disks[index].path, copy)
        disks[index] = dataclasses.replace(disks[index], path=copy)
    restored_run = run_dir / "restored"
    restored_run.mkdir(mode=0o700)
    restored_spec = dataclasses.replace(
        spec, disks=tuple(disks), run_dir=restored_run, serial_log=restored_run / "serial.log"
    )
    progress = RecordingProgress()
    restored = qemu.restore(restored_spec, state, progress)
    started.append(restored)
    assert progress.steps == ["restoring QEMU (microvm, TCG) from a template"]
    argv = Path(f"/proc/{restored.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert argv[-2] == b"-incoming" and argv[-1].startswith(b"fd:")
    # Saved and restored under QEMU's syscall filter, which denies spawning (no `exec:` migration).
    assert any(arg.startswith(b"on,") for arg in argv[argv.index(b"-sandbox") :][1:2])
    status = Path(f"/proc/{restored.pid}/status").read_text()
    assert "Seccomp:\t2" in status
    assert qemu.is_running(restored)
    with QmpClient(Path(restored.control_socket)) as qmp:
        assert qmp.execute("query-status")["status"] == "running"
        files = [b["inserted"]["file"] for b in qmp.execute("query-block")]
    assert files == [str(d.path) for d in disks]
    # The resumed guest is the same busybox init, alive: it answers the power button without booting again.
    qemu.stop(restored, timeout=60)
    console = restored_spec.serial_log.read_text(errors="replace")
    assert power_button in console
    assert "Linux version" not in console  # no kernel boot happened in the restored QEMU


def test_restore_without_a_state_file_is_refused_before_qemu_starts(driver, guest_spec, tmp_path: Path) -> None:
    qemu, _ = driver
    with pytest.raises(QemuLaunchError, match=r"^VM testvm failed to restore: no saved state at .*/missing$"):
        qemu.restore(guest_spec(), tmp_path / "missing", RecordingProgress())


def test_snapshot_compat_names_the_qemu_build(driver) -> None:
    qemu, _ = driver
    binary = find_binary(qemu.ctx)
    assert binary is not None
    assert qemu.snapshot_compat() == f"qemu {qemu_version(binary)} microvm tcg"
    assert os.path.exists(binary)
