"""``banger vm session``: long-lived commands in a VM that outlive the CLI (and the daemon).

The guest agent runs them; the daemon keeps their output (capped) on the host.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import sys

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.common import get_client
from banger_core.cli.completion import complete_vms
from banger_core.cli.output import print_models, table
from banger_core.cli.vm_options import CommandAfterDashes
from banger_core.common.errors import BangerError

#: Ctrl-]: leaves an attached session running (the same key as telnet's escape).
DETACH_KEY = b"\x1d"


@click.group(name="session")
def cli() -> None:
    """Long-lived commands in a VM: they keep running after the CLI exits.

    \b
    banger vm session start --name web dev -- python3 -m http.server
    banger vm session attach dev web      its output live, your input to it; Ctrl-] detaches
    banger vm session logs dev web [-f] [--stream stderr]
    banger vm session stop dev web
    banger vm session list dev [--json]
    """


@cli.command(name="start", cls=CommandAfterDashes)
@click.option("--name", required=True, help="The session's name (a-z, 0-9, '-').")
@click.option("--cwd", help="Directory in the guest to run in (default /root).")
@click.option(
    "--stdin-mode",
    type=click.Choice(["pipe", "none"]),
    default="pipe",
    show_default=True,
    help="pipe: `attach` can type into it; none: stdin is /dev/null.",
)
@click.argument("vm", shell_complete=complete_vms)
@click.pass_context
def start(ctx: click.Context, name: str, cwd: str | None, stdin_mode: str, vm: str) -> None:
    """Start session NAME in running VM VM: `-- CMD ...` is the command."""
    app: App = ctx.ensure_object(App)
    argv: list[str] = ctx.meta["banger.command"]
    if not argv:
        raise BangerError(f"no command: banger vm session start --name {name} {vm} -- CMD ...")
    view = get_client(app).sessions.start(vm, name, argv, cwd=cwd, stdin_mode=stdin_mode)
    click.echo(f"session {view.name} started in {vm}: banger vm session attach {vm} {view.name}")


@cli.command(name="list")
@click.argument("vm", shell_complete=complete_vms)
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as JSON.")
@pass_app
def list_sessions(app: App, vm: str, as_json: bool) -> None:
    """List VM's sessions: running, exited (with status) or lost (the VM stopped under them)."""
    views = get_client(app).sessions.list(vm)
    if as_json:
        print_models(views)
        return
    rows = [
        (v.name, v.state, "" if v.status is None else v.status, v.stdout_bytes + v.stderr_bytes, shlex.join(v.argv))
        for v in views
    ]
    click.echo(table(("NAME", "STATE", "STATUS", "OUTPUT", "COMMAND"), rows))


@cli.command(name="logs")
@click.argument("vm", shell_complete=complete_vms)
@click.argument("name")
@click.option("--stream", type=click.Choice(["stdout", "stderr"]), default="stdout", show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the session ends.")
@pass_app
def logs(app: App, vm: str, name: str, stream: str, follow: bool) -> None:
    """Print session NAME's output (the host keeps its last 4-8 MiB per stream)."""
    out = sys.stdout.buffer
    try:
        for chunk in get_client(app).sessions.logs(vm, name, stream=stream, follow=follow):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        pass


@cli.command(name="stop")
@click.argument("vm", shell_complete=complete_vms)
@click.argument("name")
@pass_app
def stop(app: App, vm: str, name: str) -> None:
    """Stop session NAME: SIGTERM, then SIGKILL after 10 s."""
    view = get_client(app).sessions.stop(vm, name)
    click.echo(f"session {view.name} {view.state}" + ("" if view.status is None else f" (status {view.status})"))


@cli.command(name="attach")
@click.argument("vm", shell_complete=complete_vms)
@click.argument("name")
@pass_app
def attach(app: App, vm: str, name: str) -> None:
    """Attach to session NAME: its new output here, your input to it. Ctrl-] detaches; the session runs on."""
    target = get_client(app).sessions.attach(vm, name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(target.socket)
    except OSError as exc:
        raise BangerError(f"cannot attach to session {name}: {exc.strerror or exc}") from None
    stdin = sys.stdin.fileno()
    saved = None
    if os.isatty(stdin):
        import termios
        import tty

        saved = termios.tcgetattr(stdin)
        # Raw before saying "attached": switching later would discard what was already typed.
        tty.setraw(stdin)
    click.echo(f"attached to {name} in {vm}; Ctrl-] detaches (the session keeps running)\r", err=True)
    ended = False
    try:
        ended = _bridge(sock, stdin, sys.stdout.fileno())
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()
    click.echo(f"\r\nsession {name} ended" if ended else f"\r\ndetached from {name} (still running)", err=True)


def _bridge(sock: socket.socket, stdin: int, stdout: int) -> bool:
    """Copy until the detach key (False) or the session's end (True)."""
    readers = [sock.fileno(), stdin]
    while True:
        ready, _, _ = select.select(readers, [], [])
        if sock.fileno() in ready:
            data = sock.recv(65536)
            if not data:
                return True
            os.write(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 4096)
            if not data:
                readers.remove(stdin)  # our input ended; keep showing output
                continue
            if DETACH_KEY in data:
                sock.sendall(data.split(DETACH_KEY, 1)[0])
                return False
            sock.sendall(data)
