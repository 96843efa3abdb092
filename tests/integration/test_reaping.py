"""bangerd leaves no ``<defunct>`` VMM processes behind, whichever backend started them."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_daemon import banger, prepare
from tests.support.daemon import DaemonHarness


def zombie_children(pid: int) -> list[str]:
    """``PID (comm)`` of every zombie whose parent is ``pid``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z" and int(ppid) == pid:
            found.append(stat.split(")", 1)[0] + ")")
    return found


def test_stopped_and_deleted_vms_leave_no_zombie_under_the_daemon(daemon: DaemonHarness) -> None:
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('default_image = "fake-tiny"\nssh_ready_timeout = 1\n')
    prepare(daemon)
    # The fake VMM never runs sshd: each start launches a VMM process, times out and kills it.
    for name in ("one", "two"):
        result = banger(daemon, "vm", "create", "--name", name, "--backend", "fakevmm")
        assert result.returncode == 1 and "did not become ssh-ready" in result.stderr
    assert banger(daemon, "vm", "start", "two").returncode == 1
    banger(daemon, "vm", "delete", "one", check=True)
    banger(daemon, "vm", "delete", "--force", "two", check=True)
    pid = daemon.pid()
    assert pid is not None
    assert zombie_children(pid) == []
