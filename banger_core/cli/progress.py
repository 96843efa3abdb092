"""How a long operation's progress looks on stderr.

Every step is one ``==> message`` line, on a terminal or not. Below it, on a
terminal, a live line (drawn by rich, imported only once a live line is
needed so quick commands never pay for it): a spinner with the elapsed time,
or for a download a bar with bytes, rate and time left. Without a terminal
the same figures come as plain lines, a bounded number per transfer (one per
tenth done, or one per :data:`PLAIN_INTERVAL` seconds when the size is
unknown), never one per chunk. ``quiet`` (``--json``) shows nothing.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

import click

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from banger_core.api.events import ProgressUpdate

#: Seconds between plain progress lines of a transfer whose size is unknown.
PLAIN_INTERVAL = 10.0


class ProgressPrinter:
    """Shows the progress events of a daemon stream (an SDK ``progress`` callback).

    Call :meth:`done` when the stream ends (or fails) so the live line is cleared.
    """

    def __init__(self, verbose: int = 0, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self._stream = stream if stream is not None else sys.stderr
        # A dumb terminal (Emacs' shell) cannot redraw a line: it gets the plain lines.
        self.tty = self._stream.isatty() and os.environ.get("TERM") != "dumb"
        self._live: _LiveLine | None = None
        self._plain = _PlainTransfer()

    def __call__(self, event: ProgressUpdate) -> None:
        if self.quiet:
            return
        # By the event's tag, not isinstance: this module must not import pydantic (`banger vm --help`).
        if event.event == "spec":
            self._line(event.line)
        elif event.event == "step":
            self._end_live()
            self._line(f"==> {event.message}")
            self._plain = _PlainTransfer()
            if self.tty:
                self._live = _LiveLine(self._stream)
        elif event.event == "log" and self.verbose:
            self._line(f"    {event.message}")
        elif event.event == "progress":
            if self._live is not None:
                self._live.advance(event.done, event.total, event.unit)
            elif not self.tty:
                line = self._plain.advance(event.done, event.total, event.unit, time.monotonic())
                if line:
                    self._line(f"    {line}")

    def done(self) -> None:
        """The stream is over: clear the live line (the ``==>`` lines stay)."""
        self._end_live()

    def _line(self, text: str) -> None:
        if self._live is not None:
            self._live.print(text)
        else:
            click.echo(text, file=self._stream)

    def _end_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class _LiveLine:
    """The terminal's live line under the current step: a spinner until a transfer reports, then a bar."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn

        self._console = Console(file=stream, highlight=False)
        self._progress: Progress = Progress(SpinnerColumn(), TimeElapsedColumn(), console=self._console, transient=True)
        self._task: TaskID = self._progress.add_task("", total=None)
        self._unit: str | None = None
        self._last_done = 0
        self._progress.start()
        # A stream cut short by an exception nobody caught must not leave the cursor hidden.
        atexit.register(self.stop)

    def advance(self, done: int, total: int | None, unit: str) -> None:
        switching = unit != self._unit
        if switching:
            self._switch_to_transfer(unit)
        elif done < self._last_done:  # the step moved on to its next file
            self._progress.reset(self._task)
        self._last_done = done
        self._progress.update(self._task, completed=done, total=total or None)
        if switching:  # started only now, so its first frame has the figures
            self._progress.start()

    def _switch_to_transfer(self, unit: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns: tuple[ProgressColumn, ...]
        if unit == "B":
            columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        else:
            label = TextColumn(
                unit.replace("{", "{{").replace("}", "}}"), markup=False
            )  # a plugin's word, not a format
            columns = (SpinnerColumn(), BarColumn(), MofNCompleteColumn(), label, TimeElapsedColumn())
        self._progress.stop()
        self._progress = Progress(*columns, console=self._console, transient=True)
        self._task = self._progress.add_task("", total=None)
        self._unit = unit
        self._last_done = 0

    def print(self, text: str) -> None:
        """A permanent line above the live one."""
        self._console.print(text, markup=False, emoji=False, soft_wrap=True)

    def stop(self) -> None:
        self._progress.stop()
        atexit.unregister(self.stop)


class _PlainTransfer:
    """The plain lines of one step's transfer: at most one per tenth done, or one per PLAIN_INTERVAL seconds."""

    def __init__(self) -> None:
        self._started: float | None = None
        self._last_done = 0
        self._tenths_shown = 0
        self._shown_at = 0.0

    def advance(self, done: int, total: int | None, unit: str, now: float) -> str | None:
        if self._started is None or done < self._last_done:  # a new transfer (the step's next file)
            self._started, self._tenths_shown, self._shown_at = now, 0, now
        self._last_done = done
        if total:
            tenths = min(10, 10 * done // total)
            if tenths <= self._tenths_shown:
                return None
            self._tenths_shown = tenths
        elif now - self._shown_at < PLAIN_INTERVAL:
            return None
        self._shown_at = now
        return _plain_text(done, total, unit, now - self._started)


def _plain_text(done: int, total: int | None, unit: str, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if unit != "B":
        return f"{done}/{total} {unit}" if total else f"{done} {unit}"
    text = f"{_bytes(done)} / {_bytes(total)} ({100 * done // total}%)" if total else _bytes(done)
    if rate:
        text += f", {_bytes(int(rate))}/s"
        if total and done < total:
            text += f", {_duration((total - done) / rate)} left"
    return text


def _bytes(n: int) -> str:
    """Decimal units, as rich's live line shows them (``5.2 MB``)."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
