"""Helpers for commands that talk to the daemon: the client and progress display."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from banger_core.cli.app import App

if TYPE_CHECKING:
    from banger_core.api.events import ProgressEvent, ProgressUpdate
    from banger_core.client import Client
    from banger_core.common.ssh import SshTarget


def get_client(app: App) -> Client:
    from banger_core.client import Client

    return Client(app.env, notify=lambda line: click.echo(line, err=True))


def ssh_target(client: Client, name: str) -> SshTarget:
    """How to reach running VM ``name`` with ssh, as the daemon says."""
    from banger_core.common.ssh import SshTarget

    return SshTarget(**client.vms.ssh_target(name).model_dump())


class ProgressPrinter:
    """Shows daemon progress events on stderr: one line per step, a live byte counter on a TTY."""

    def __init__(self, verbose: int = 0, quiet: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_draw = 0.0
        self._drawn = False

    def _clear(self) -> None:
        if self._drawn:
            click.echo("\r\033[K", nl=False, err=True)
            self._drawn = False

    def __call__(self, event: ProgressUpdate) -> None:
        if self.quiet:
            return
        # By the event's tag, not isinstance: this module must not import pydantic (`banger vm --help`).
        if event.event == "spec":
            self._clear()
            click.echo(event.line, err=True)
        elif event.event == "step":
            self._clear()
            click.echo(f"==> {event.message}", err=True)
        elif event.event == "log" and self.verbose:
            self._clear()
            click.echo(f"    {event.message}", err=True)
        elif event.event == "progress" and self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.1:
                return
            self._last_draw = now
            click.echo(f"\r\033[K    {_progress_text(event)}", nl=False, err=True)
            self._drawn = True

    def done(self) -> None:
        self._clear()


def _progress_text(event: ProgressEvent) -> str:
    done, total, unit = event.done, event.total, event.unit
    if unit == "B":
        text = _bytes(done)
        if total:
            text += f" / {_bytes(total)} ({100 * done // max(total, 1)}%)"
        return text
    return f"{done}/{total} {unit}" if total else f"{done} {unit}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"
