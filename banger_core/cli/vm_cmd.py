"""``banger vm``: create, run, inspect and remove VMs (all through the daemon)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import click

from banger_core.api.state import VmState
from banger_core.cli.app import App, pass_app
from banger_core.cli.common import get_client, ssh_target
from banger_core.cli.completion import complete_vms
from banger_core.cli.output import print_json, print_models
from banger_core.cli.progress import ProgressPrinter
from banger_core.cli.vm_options import CommandAfterDashes, create_options, spec_body
from banger_core.common.errors import BangerError
from banger_core.common.sizes import format_mib, format_size

if TYPE_CHECKING:
    from datetime import datetime

    from banger_core.api.models import VmView
    from banger_core.client import Client


class VmGroup(click.Group):
    """``vm run``, ``vm workspace`` and ``vm session`` load their modules when asked for: importing them
    for every ``vm`` command would cost ``vm list`` more than its request does (docs/performance.md).
    """

    #: Subcommand name -> (module under banger_core.cli, its click command's attribute there).
    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "run": ("run_cmd", "cli"),
        "workspace": ("run_cmd", "workspace_cli"),
        "session": ("session_cmd", "cli"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            import importlib

            module, attribute = self.LAZY[cmd_name]
            command: click.Command = getattr(importlib.import_module(f"banger_core.cli.{module}"), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(name="vm", cls=VmGroup)
def cli() -> None:
    """Create, run, inspect and remove VMs.

    \b
    banger vm run [PATH] [-- CMD...]    the one command (see `banger vm run --help`)
    banger vm create --name dev         create and boot a VM, leave it running
    banger vm ssh dev                   a shell in it; `-- CMD` runs a command
    banger vm list / show / logs        what exists, in detail, its serial console
    banger vm stop / start / restart / delete
    banger vm session start/attach/logs/stop/list   long-lived commands in a VM
    """


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "-"


def _address(vm: VmView) -> str:
    return vm.address or "-"


def _ports(vm: VmView) -> str:
    """Published ports, compact: ``8080->80/tcp,5353->53/udp``."""
    return ",".join(f"{p.host_port}->{p.guest_port}/{p.protocol}" for p in vm.ports) or "-"


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def list_vms(app: App, as_json: bool) -> None:
    """List VMs with their state, image, backend and address."""
    if as_json:  # for programs: through the typed SDK, every field validated
        print_models(get_client(app).vms.list())
        return
    from banger_core.cli.vm_list import render

    click.echo(render(app.env, notify=lambda line: click.echo(line, err=True)))


@cli.command(name="show")
@click.argument("name", shell_complete=complete_vms)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def show(app: App, name: str, as_json: bool) -> None:
    """Show one VM in detail."""
    vm = get_client(app).vms.get(name)
    if as_json:
        print_models(vm)
        return
    fields: list[tuple[str, object]] = [
        ("name", vm.name),
        ("id", vm.id),
        ("state", vm.state),
        ("image", vm.image),
        ("kernel", vm.kernel),
        ("backend", vm.backend),
        ("network", vm.network),
        ("host access", "yes" if vm.host_access else "no (isolated)"),
        ("vcpus", vm.vcpus),
        ("memory", format_mib(vm.memory_mib)),
        ("disk", format_size(vm.disk_size)),
        ("address", _address(vm)),
        ("ports", ", ".join(str(p) for p in vm.ports) or "-"),
        ("guest ip", vm.guest_ip or "-"),
        ("mac", vm.mac),
        ("ssh", f"{vm.ssh.host}:{vm.ssh.port}" if vm.ssh else "-"),
        ("pid", vm.pid or "-"),
        ("booted", vm.booted or "-"),
        ("created", _when(vm.created_at)),
        ("started", _when(vm.started_at)),
        ("serial log", vm.serial_log),
    ]
    if vm.last_error:
        fields.append(("last error", vm.last_error))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key:<{width}}  {value if value is not None else '-'}")


@cli.command(name="port")
@click.argument("name", shell_complete=complete_vms)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def port(app: App, name: str, as_json: bool) -> None:
    """List VM NAME's published ports (`-p`): GUEST/PROTO -> 127.0.0.1:HOST, one a line."""
    vm = get_client(app).vms.get(name)
    if as_json:
        print_json([mapping.model_dump(mode="json") for mapping in vm.ports])
        return
    if not vm.ports:
        click.echo(f"{name} publishes no ports: create it with -p HOST:GUEST", err=True)
    for mapping in vm.ports:
        click.echo(str(mapping))


@cli.command(name="create")
@create_options
@click.option("--no-start", is_flag=True, help="Create the VM and its disks, but don't boot it.")
@click.option("--json", "as_json", is_flag=True, help="Print the VM as JSON when done.")
@pass_app
def create(app: App, /, no_start: bool, as_json: bool, **kw: object) -> None:
    """Create a VM and boot it (unless --no-start); a missing image is pulled first.

    It keeps running until `banger vm stop`.
    """
    from banger_core.cli.run_cmd import pull_missing_image

    printer = ProgressPrinter(app.verbose, quiet=app.quiet or as_json)
    spec = spec_body(kw)
    client = get_client(app)
    pull_missing_image(client, client.vms.plan(**spec), printer)
    vm = client.vms.create(start=not no_start, progress=printer, **spec)
    printer.done()
    if as_json:
        print_models(vm)
        return
    if vm.state is VmState.RUNNING:
        click.echo(f"{vm.name} is running: `banger vm ssh {vm.name}` for a shell")
    else:
        click.echo(f"{vm.name} created ({vm.state}): `banger vm start {vm.name}` boots it")


#: What each lifecycle command calls; ``_lifecycle`` refuses any other name, so no op falls through to delete.
LIFECYCLE: dict[str, Callable[[Client, str, bool, ProgressPrinter], object]] = {
    "start": lambda client, name, force, progress: client.vms.start(name, progress=progress),
    "stop": lambda client, name, force, progress: client.vms.stop(name, force=force, progress=progress),
    "restart": lambda client, name, force, progress: client.vms.restart(name, progress=progress),
    "delete": lambda client, name, force, progress: client.vms.delete(name, force=force, progress=progress),
}


def _lifecycle(op: str, doc: str, *, force_help: str | None = None) -> click.Command:
    if op not in LIFECYCLE:
        raise ValueError(f"unknown VM operation {op!r} (known: {', '.join(LIFECYCLE)})")
    run = LIFECYCLE[op]

    @click.argument("names", nargs=-1, required=True, metavar="NAME...", shell_complete=complete_vms)
    @pass_app
    def command(app: App, names: tuple[str, ...], force: bool = False) -> None:
        client = get_client(app)
        failed = False
        for name in names:
            printer = ProgressPrinter(app.verbose, quiet=app.quiet)
            try:
                run(client, name, force, printer)
            except BangerError as exc:
                if len(names) == 1:
                    raise
                click.echo(f"banger: error: {exc}", err=True)
                failed = True
            finally:
                printer.done()
        if failed:
            sys.exit(1)

    command.__doc__ = doc
    if force_help:
        command = click.option("--force", is_flag=True, help=force_help)(command)
    return click.command(name=op)(command)


cli.add_command(_lifecycle("start", "Boot stopped VMs and wait until ssh works."))
cli.add_command(
    _lifecycle("stop", "Shut VMs down (graceful, then killed after a timeout).", force_help="Kill at once.")
)
cli.add_command(_lifecycle("restart", "Stop and start VMs again."))
cli.add_command(
    _lifecycle(
        "delete",
        "Delete VMs: their disks, handles and addresses. Running VMs need --force.",
        force_help="Stop (kill) a running VM first.",
    )
)


@cli.command(name="logs")
@click.argument("name", shell_complete=complete_vms)
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the console writes.")
@pass_app
def logs(app: App, name: str, follow: bool) -> None:
    """Print a VM's serial console log (boot messages, BANGER-READY, kernel errors)."""
    out = sys.stdout.buffer
    try:
        for chunk in get_client(app).vms.logs(name, follow=follow):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        pass


@cli.command(name="ssh", cls=CommandAfterDashes)
@click.argument("name", shell_complete=complete_vms)
@click.pass_context
def ssh(ctx: click.Context, name: str) -> None:
    """Open a shell in VM NAME, or run `-- CMD ...` there and exit with its status.

    Uses banger's key and its own known_hosts, with the VM's host key pinned
    when the VM was created (never StrictHostKeyChecking=no).
    """
    app: App = ctx.ensure_object(App)
    target = ssh_target(get_client(app), name)
    argv: list[str] = ctx.meta["banger.command"]
    interactive = not argv
    tty = interactive and sys.stdin.isatty()
    full = target.command_argv(argv, tty=tty) if argv else target.argv(tty=tty, batch=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(full[0], full)  # noqa: S606 -- replace ourselves with ssh: its exit status is ours
