"""A graceful daemon stop (SIGTERM) runs its whole shutdown: a warm template being made (nobody's VM) ends."""

from __future__ import annotations

import subprocess
from pathlib import Path

from banger_core.daemon.vm.warm import BUILDING_PREFIX
from banger_hookspecs import VmProcess
from banger_hookspecs.process import read_proc_stat
from tests.support.daemon import DaemonHarness


def test_daemon_stop_ends_a_template_build_in_progress(daemon: DaemonHarness) -> None:
    daemon.client().daemon.status()  # started
    # Stands in for the template's VMM: a process of ours, recorded the way a build records its QEMU.
    vmm = subprocess.Popen(["sleep", "300"])
    try:
        started = read_proc_stat(vmm.pid)
        assert started is not None
        building = daemon.state / "templates" / f"{BUILDING_PREFIX}{'ab' * 12}"
        building.mkdir(parents=True)
        record = VmProcess(backend="qemu", pid=vmm.pid, start_time=started.start_time, control_socket="/nonexistent")
        from pydantic import TypeAdapter

        (building / "vmm.json").write_bytes(TypeAdapter(VmProcess).dump_json(record))

        daemon.stop()

        assert vmm.wait(timeout=10) == -9, "the template's VMM outlived the daemon"
        assert not building.exists()
        assert Path(daemon.state / "templates").exists()
        # The whole graceful stop ran (it did not before: uvicorn re-raised SIGTERM under Python's default).
        assert "bangerd stopped; running VMs keep running" in (daemon.state / "logs" / "bangerd.log").read_text()
    finally:
        if vmm.poll() is None:
            vmm.kill()
            vmm.wait()
