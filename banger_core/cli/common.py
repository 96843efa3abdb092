"""Helpers for commands that talk to the daemon: the client and progress display."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from banger_core.cli.app import App

if TYPE_CHECKING:
    from banger_core.client import Client


def get_client(app: App) -> Client:
    from banger_core.client import Client

    return Client(app.env, notify=lambda line: click.echo(line, err=True))


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

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        kind = event.get("event")
        if kind == "step":
            self._clear()
            message = str(event.get("message", ""))
            if message.startswith("spec: "):
                click.echo(message, err=True)
            else:
                click.echo(f"==> {message}", err=True)
        elif kind == "log" and self.verbose:
            self._clear()
            click.echo(f"    {event.get('message', '')}", err=True)
        elif kind == "progress" and self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.1:
                return
            self._last_draw = now
            click.echo(f"\r\033[K    {_progress_text(event)}", nl=False, err=True)
            self._drawn = True

    def done(self) -> None:
        self._clear()


def _progress_text(event: dict[str, Any]) -> str:
    done, total, unit = int(event.get("done") or 0), event.get("total"), event.get("unit", "B")
    if unit == "B":
        text = _bytes(done)
        if total:
            text += f" / {_bytes(int(total))} ({100 * done // max(int(total), 1)}%)"
        return text
    return f"{done}/{total} {unit}" if total else f"{done} {unit}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"
