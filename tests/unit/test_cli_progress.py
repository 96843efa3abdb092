"""Plain (non-terminal) progress lines stay few whatever the number of chunks."""

from __future__ import annotations

import io
import os
import pty
import select

import pytest

from banger_core.api.events import LogEvent, ProgressEvent, ProgressUpdate, StepEvent
from banger_core.cli.progress import PLAIN_INTERVAL, ProgressPrinter, _PlainTransfer


def test_a_transfer_of_unknown_size_gets_a_line_per_interval_not_per_chunk() -> None:
    transfer = _PlainTransfer()
    shown = [
        line
        for second in range(0, 61)
        for chunk in range(100)  # 100 chunks a second for a minute
        if (line := transfer.advance((second * 100 + chunk) * 1000, None, "B", second + chunk / 100))
    ]
    assert len(shown) == 60 // int(PLAIN_INTERVAL)
    assert shown[0] == "1.0 MB, 100.0 kB/s"


def test_each_file_of_a_step_counts_its_own_tenths() -> None:
    transfer = _PlainTransfer()
    first = [transfer.advance(done, 1000, "B", done / 1000) for done in range(0, 1001, 50)]
    second = [transfer.advance(done, 1000, "B", 2 + done / 1000) for done in range(0, 1001, 50)]
    assert sum(1 for line in first if line) == 10 and sum(1 for line in second if line) == 10
    assert [line for line in second if line][-1] == "1.0 kB / 1.0 kB (100%), 1.0 kB/s"


def test_other_units_count_items() -> None:
    assert _PlainTransfer().advance(3, 3, "layers", 1.0) == "3/3 layers"


def test_quiet_shows_nothing_and_logs_wait_for_verbose() -> None:
    stream = io.StringIO()
    for printer in (ProgressPrinter(quiet=True, stream=stream), ProgressPrinter(stream=stream)):
        printer(StepEvent(message="pulling"))
        printer(LogEvent(message="apt says hi"))
        printer(ProgressEvent(done=10, total=10))
        printer.done()
    assert stream.getvalue() == "==> pulling\n    10 B / 10 B (100%)\n"
    verbose = io.StringIO()
    ProgressPrinter(verbose=1, stream=verbose)(LogEvent(message="apt says hi"))
    assert verbose.getvalue() == "    apt says hi\n"


def _shown_on_a_terminal(events: list[ProgressUpdate]) -> str:
    controller, terminal = pty.openpty()
    with open(terminal, "w", closefd=True) as stream:
        printer = ProgressPrinter(stream=stream)
        for event in events:
            printer(event)
        printer.done()
    shown = b""  # (a few hundred bytes: the terminal's buffer holds them until read)
    while select.select([controller], [], [], 0)[0]:
        try:
            shown += os.read(controller, 65536)
        except OSError:  # EIO: drained, and the writing side is closed
            break
    os.close(controller)
    return shown.decode()


def test_a_terminal_gets_a_live_line_and_a_dumb_one_the_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[ProgressUpdate] = [StepEvent(message="pulling"), ProgressEvent(done=5, total=10, unit="{layers}")]
    monkeypatch.setenv("TERM", "xterm")
    live = _shown_on_a_terminal(events)
    assert "==> pulling" in live and "5/10" in live and "{layers}" in live and "(50%)" not in live
    monkeypatch.setenv("TERM", "dumb")
    assert _shown_on_a_terminal(events) == "==> pulling\r\n    5/10 {layers}\r\n"
