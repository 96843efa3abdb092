"""A guest that prints without end cannot fill the disk: the console log is capped and rotated."""

from __future__ import annotations

import time
from pathlib import Path

from banger_hookspecs.logpump import SERIAL_LOG_MAX_BYTES
from tests.integration.test_daemon import banger, prepare
from tests.support.banger_fake import CHATTY_BYTES
from tests.support.daemon import DaemonHarness


def test_a_chatty_guest_leaves_at_most_the_cap_plus_one_rotated_file(daemon: DaemonHarness) -> None:
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('default_image = "fake-tiny"\nssh_ready_timeout = 2\n')
    prepare(daemon)
    # The fake VMM prints CHATTY_BYTES (over twice the cap) at once, then never becomes ssh-ready.
    result = banger(daemon, "vm", "create", "--name", "chatty", "--backend", "fakevmm")
    assert result.returncode == 1 and "did not become ssh-ready" in result.stderr
    vm_dir = daemon.state / "vms" / daemon.client().vms.get("chatty").id
    remainder = CHATTY_BYTES % SERIAL_LOG_MAX_BYTES
    deadline = time.monotonic() + 30
    while (vm_dir / "serial.log").stat().st_size != remainder:
        assert time.monotonic() < deadline, "the log pump did not finish"
        time.sleep(0.1)
    logs = sorted(p.name for p in vm_dir.iterdir() if p.name.startswith("serial.log"))
    assert logs == ["serial.log", "serial.log.1"]
    assert (vm_dir / "serial.log.1").stat().st_size == SERIAL_LOG_MAX_BYTES
    # `vm logs` shows what is kept, oldest first.
    shown = banger(daemon, "vm", "logs", "chatty", check=True).stdout
    assert len(shown) == SERIAL_LOG_MAX_BYTES + remainder
    assert "guest console line" in shown[:100]
