"""What the real CLI shows while a real daemon pulls: live lines on a terminal, bounded plain lines off one.

The fake plugin's ``fake-download`` reports 150 byte chunks with their total,
as the catalog and OCI downloads do, then builds its ext4 in a plain step.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent
#: A plain progress line: ``    2.0 MB / 9.8 MB (20%), 1.5 MB/s, 5s left``.
PLAIN_LINE = re.compile(r"^    [\d.]+ [kMG]?B / 9\.8 MB \((\d+)%\)")


def banger(h: DaemonHarness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "banger", *args], env=h.env, capture_output=True, text=True, timeout=120)


def start_daemon(h: DaemonHarness) -> None:
    h.client().images.list()  # any call starts it


def banger_in_terminal(h: DaemonHarness, *args: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdout and stderr; its exit code and everything it wrote."""
    start_daemon(h)  # here, so the daemon does not inherit (and hold open) the terminal
    controller, terminal = pty.openpty()
    env = dict(h.env, TERM="xterm-256color")
    proc = subprocess.Popen(
        [BIN / "banger", *args], env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the CLI closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        code = proc.wait(timeout=30)
    return code, output.decode(errors="replace")


def test_terminal_shows_steps_a_download_bar_with_rate_and_a_spinner(daemon: DaemonHarness) -> None:
    code, shown = banger_in_terminal(daemon, "image", "pull", "fake-download")
    assert code == 0, shown
    assert "==> downloading fake-download" in shown and "==> making a tiny ext4" in shown
    assert re.search(r"[\d.]+/9\.8 MB", shown), shown  # bytes done / total
    assert "MB/s" in shown  # rate
    assert "━" in shown  # rich's bar
    assert "0:00:0" in shown  # elapsed / time left
    assert "⠋" in shown  # the spinner's first frame
    assert "fake-download: from fake" in shown
    assert not re.search(r"\(\d+%\)", shown), "plain progress lines on a terminal"


def test_without_a_terminal_a_download_is_one_line_per_tenth(daemon: DaemonHarness) -> None:
    pulled = banger(daemon, "image", "pull", "fake-download")
    assert pulled.returncode == 0, pulled.stderr
    lines = pulled.stderr.splitlines()
    assert "==> downloading fake-download" in lines and "==> making a tiny ext4" in lines
    percents = [int(match[1]) for line in lines if (match := PLAIN_LINE.match(line))]
    # 150 chunks reported, 10 lines shown: one as each tenth is passed.
    assert percents == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100], pulled.stderr
    progress_lines = [line for line in lines if PLAIN_LINE.match(line)]
    assert all("MB/s" in line for line in progress_lines), pulled.stderr
    assert all(line.endswith("left") for line in progress_lines[:-1]), pulled.stderr
    assert "\r" not in pulled.stderr and "\033" not in pulled.stderr


def test_json_and_quiet_add_nothing_on_stderr(daemon: DaemonHarness) -> None:
    start_daemon(daemon)  # else the CLI says on stderr that it started the daemon
    pulled = banger(daemon, "image", "pull", "--json", "fake-download")
    assert pulled.returncode == 0 and pulled.stderr == ""
    assert json.loads(pulled.stdout)["name"] == "fake-download"
    again = banger(daemon, "--quiet", "image", "pull", "--force", "fake-download")
    assert again.returncode == 0 and again.stderr == ""
    assert again.stdout.startswith("fake-download: from fake")
    # vm create pulls its missing image first, with the pull's progress: none of it with --json.
    created = banger(daemon, "vm", "create", "--json", "--name", "quiet", "--backend", "fakevmm", "--no-start")
    assert created.returncode == 0 and created.stderr == ""
    assert json.loads(created.stdout)["image"] == "fake-tiny"
