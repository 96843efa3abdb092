"""``banger daemon``: the background daemon, for humans (the CLI starts it on demand)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json


@click.group(name="daemon")
def cli() -> None:
    """Inspect and stop bangerd (any VM command starts it when needed)."""


def _client(app: App, autostart: bool):  # type: ignore[no-untyped-def]
    from banger_core.client import Client

    return Client(app.env, autostart=autostart)


@cli.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Is the daemon running? Its pid, version, socket, log file and VM counts. Exits 1 if not running."""
    client = _client(app, autostart=False)
    if not client.ping():
        if as_json:
            print_json({"running": False, "socket": str(client.socket)})
        else:
            click.echo(f"bangerd is not running (socket {client.socket})")
        sys.exit(1)
    info = client.daemon.status()
    if as_json:
        print_json({"running": True, **info})
        return
    click.echo(f"bangerd {info['version']} (commit {info['commit'][:8]}) running, pid {info['pid']}")
    click.echo(f"  up {int(info['uptime'])} s; {info['running_vms']} of {info['vms']} VMs running")
    click.echo(f"  socket {info['socket']}")
    click.echo(f"  log    {info['log_file']}")
    if "web_ui" in info:  # a daemon older than this CLI may not say
        click.echo(f"  web UI {info['web_ui']}")


@cli.command(name="stop")
@pass_app
def stop(app: App) -> None:
    """Stop the daemon. Running VMs keep running; the next daemon adopts them."""
    client = _client(app, autostart=False)
    if not client.ping():
        click.echo("bangerd is not running")
        return
    pid = int(client.daemon.status()["pid"])
    client.daemon.shutdown()
    client.close()  # an open keep-alive connection would delay the daemon's graceful exit
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        raise click.ClickException(f"bangerd (pid {pid}) is still running after 15 s: see `banger daemon logs`")
    click.echo(f"bangerd (pid {pid}) stopped")


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@cli.command(name="logs")
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines from the end.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@pass_app
def logs(app: App, lines: int, follow: bool) -> None:
    """Print the daemon's log file (works whether or not it runs)."""
    from banger_core.config import load_config

    log_file = Path(load_config(app.pm, app.env)["state_dir"]) / "logs" / "bangerd.log"
    if not log_file.exists():
        click.echo(f"no daemon log yet ({log_file})")
        return
    with open(log_file, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 256 * 1024))
        tail = fh.read().splitlines(keepends=True)[-lines:]
        sys.stdout.buffer.write(b"".join(tail))
        sys.stdout.flush()
        while follow:
            chunk = fh.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                try:
                    time.sleep(0.25)
                except KeyboardInterrupt:
                    return
