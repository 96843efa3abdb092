"""``banger daemon``: the background daemon, for humans (the CLI starts it on demand)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json

if TYPE_CHECKING:
    from banger_core.client import Client


@click.group(name="daemon")
def cli() -> None:
    """Inspect, stop and restart bangerd (any VM command starts it when needed)."""


def _client(app: App, autostart: bool, socket: Path | None = None) -> Client:
    from banger_core.client import Client

    return Client(app.env, autostart=autostart, socket=socket)


@cli.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Is the daemon running? Its pid, version, socket, log file and VM counts. Exits 1 if not running."""
    from banger_core.common import instance, paths

    client = _client(app, autostart=False)
    if not client.ping():
        holder = instance.lock_holder(paths.state_dir(app.env) / instance.LOCK_NAME)
        if as_json:
            print_json({"running": False, "socket": str(client.socket), "lock_holder_pid": holder and holder.pid})
        elif holder is not None:
            click.echo(
                f"{holder.who} holds the state dir but does not answer on {client.socket} "
                f"(it listens on {holder.socket}): `banger daemon stop` stops it"
            )
        else:
            click.echo(f"bangerd is not running (socket {client.socket})")
        sys.exit(1)
    info = client.daemon.status()
    if as_json:
        print_json({"running": True, **info.model_dump(mode="json")})
        return
    click.echo(f"bangerd {info.version} (commit {info.commit[:8]}) running, pid {info.pid}")
    click.echo(f"  up {int(info.uptime)} s; {info.running_vms} of {info.vms} VMs running")
    click.echo(f"  socket {info.socket}")
    click.echo(f"  log    {info.log_file}")
    if info.web_ui is not None:  # a daemon older than this CLI may not say
        click.echo(f"  web UI {info.web_ui}")


@cli.command(name="stop")
@pass_app
def stop(app: App) -> None:
    """Stop the daemon. Running VMs keep running; the next daemon adopts them.

    A daemon that does not stop after the shutdown request (or does not
    answer at all) gets SIGTERM, then SIGKILL: only that exact process (pid and
    start time from its state-dir lock), never whatever now has its pid.
    """
    _refuse_when_installed(app, "stop")
    _stop(app)


@cli.command(name="restart")
@pass_app
def restart(app: App) -> None:
    """Stop the daemon (as `banger daemon stop` does) and start a new one, e.g. to apply config.toml."""
    _refuse_when_installed(app, "restart")
    _stop(app)
    with _client(app, autostart=True) as client:
        client.ensure_daemon()
        click.echo(f"bangerd (pid {client.daemon.status().pid}) started")


def _refuse_when_installed(app: App, action: str) -> None:
    """The installed bangerd.service is systemd's to stop and start, not this CLI's."""
    from banger_core.common import paths

    if paths.installed_socket(app.env) is not None:
        raise click.ClickException(
            f"bangerd runs as the installed service: `sudo banger system restart` restarts it "
            f"(`sudo systemctl {action} bangerd.service` to {action} it)"
        )


#: Seconds to wait after the shutdown request, after SIGTERM, after SIGKILL.
SHUTDOWN_GRACE = 15.0
TERM_GRACE = 5.0
KILL_GRACE = 5.0


def _stop(app: App) -> None:
    from banger_core.common import instance, paths
    from banger_hookspecs.process import read_proc_stat, signal_process, wait_gone

    client = _client(app, autostart=False)
    lock = paths.state_dir(app.env) / instance.LOCK_NAME
    holder = instance.lock_holder(lock)
    pid = start_time = None
    identity = holder.live_identity() if holder is not None else None
    if holder is not None and identity is not None:
        pid, start_time = identity
        client = _client(app, autostart=False, socket=holder.socket)
    if pid is None and client.ping():  # the daemon says who it is (also one from an older banger)
        pid = client.daemon.status().pid
        proc = read_proc_stat(pid)
        start_time = proc.start_time if proc is not None else None
    if pid is None or start_time is None:
        if holder is not None:
            raise click.ClickException(
                f"{lock} is locked by a process that does not answer and that banger cannot identify "
                f"(the lock names pid {holder.pid}): `fuser -v {lock}` shows it"
            )
        click.echo("bangerd is not running")
        return
    who = f"bangerd (pid {pid})"
    asked = client.ping() and _request_shutdown(client)  # ping: a wedged daemon costs 5 s, not 30
    client.close()  # an open keep-alive connection would delay the daemon's graceful exit
    if asked and wait_gone(pid, start_time, SHUTDOWN_GRACE):
        click.echo(f"{who} stopped")
        return
    if asked:
        click.echo(f"{who} is still running {SHUTDOWN_GRACE:.0f} s after the shutdown request: sending SIGTERM")
    else:
        click.echo(f"{who} does not answer on {client.socket}: sending SIGTERM")
    signal_process(pid, start_time, signal.SIGTERM)
    if wait_gone(pid, start_time, TERM_GRACE):
        click.echo(f"{who} stopped after SIGTERM")
        return
    click.echo(f"{who} ignored SIGTERM for {TERM_GRACE:.0f} s: sending SIGKILL")
    signal_process(pid, start_time, signal.SIGKILL)
    if not wait_gone(pid, start_time, KILL_GRACE):
        raise click.ClickException(
            f"{who} survived SIGKILL for {KILL_GRACE:.0f} s (stuck in the kernel, see /proc/{pid}/stack): "
            "try again later"
        )
    click.echo(f"{who} killed; running VMs keep running and the next daemon adopts them")


def _request_shutdown(client: Client) -> bool:
    """Ask the daemon to shut down; False when it does not answer."""
    from banger_core.common.errors import BangerError

    try:
        client.daemon.shutdown()
    except BangerError:
        return False
    return True


@cli.command(name="logs")
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines from the end.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@pass_app
def logs(app: App, lines: int, follow: bool) -> None:
    """Print the daemon's log file (works whether or not it runs)."""
    from banger_core.common import paths
    from banger_core.common.config import load_config

    if paths.installed_socket(app.env) is not None:  # the service's state dir, not this user's
        from banger_core.install.record import load_record

        state_dir = Path(load_record(paths.install_toml(app.env)).state_dir)
    else:
        state_dir = Path(load_config(app.pm, app.env)["state_dir"])
    log_file = state_dir / "logs" / "bangerd.log"
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
