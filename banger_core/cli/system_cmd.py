"""``banger system``: banger as two systemd services (bangerd as the owner, bangerd-root as root).

See docs/install.md. With ``--root DIR`` every command works on the files
rendered under DIR and runs nothing (packaging, tests); without it, on the live
host, which needs systemd as PID 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json

if TYPE_CHECKING:
    from banger_core.install.layout import Layout
    from banger_core.install.record import InstallRecord

ROOT_HELP = "Work on the files under DIR (a packaging or test root), not the live host: runs no systemctl."
PREFIX_HELP = "Where the virtualenvs live (units run PREFIX/current/bin/bangerd)."
root_option = click.option(
    "--root", "root", type=click.Path(path_type=Path, exists=True, file_okay=False), metavar="DIR", help=ROOT_HELP
)


def _root(root: Path | None) -> Path:
    if root is None:
        return Path("/")
    return root.absolute()


def _layout(root: Path | None, prefix: str) -> Layout:
    from banger_core.install.layout import Layout, validate_prefix

    return Layout(_root(root), validate_prefix(prefix))


def _record_path(app: App, layout: Layout) -> Path:
    """install.toml: under --root, else ``$BANGER_INSTALL_TOML`` or /etc/banger/install.toml."""
    from banger_core.common.paths import install_toml

    return layout.staged(layout.install_toml) if not layout.live else install_toml(app.env)


@click.group(name="system")
def cli() -> None:
    """Install banger as a system service (systemd), inspect, restart or remove it."""


@cli.command(name="install")
@click.option("--owner", required=True, metavar="USER", help="The unprivileged user bangerd runs as (not root).")
@click.option("--prefix", default="/opt/banger", show_default=True, help=PREFIX_HELP)
@root_option
@click.option(
    "--wheels",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    metavar="DIR",
    help="Install from this wheelhouse, offline (default: build the checkout banger runs from).",
)
@click.option(
    "--venv",
    "with_venv",
    is_flag=True,
    help="With --root: build the virtualenv under DIR too (its scripts name PREFIX, where it will live).",
)
@pass_app
def install(app: App, owner: str, prefix: str, root: Path | None, wheels: Path | None, with_venv: bool) -> None:
    """Install bangerd.service and bangerd-root.service, and start both.

    \b
    Writes PREFIX/versions/VERSION (a virtualenv) and PREFIX/current,
    /etc/systemd/system/{bangerd,bangerd-root}.service and /etc/banger/install.toml,
    then `systemctl enable --now` both. Afterwards every banger command of the
    owner talks to the service; it never starts a daemon of its own.
    """
    from banger_core.common.buildinfo import build_info
    from banger_core.common.config import load_config
    from banger_core.install import service
    from banger_core.install.layout import resolve_owner
    from banger_core.install.venv import current_build_wheels, require_runnable_by, version_name, wheel_build_info

    layout = _layout(root, prefix)
    person = resolve_owner(owner)
    if layout.live:
        service.require_live_host()
        require_runnable_by(person.uid, os.getgrouplist(person.name, person.gid), person.name)
    network = service.network_bounds(load_config(app.pm, {"HOME": person.home}).data)
    created: list[str] = []
    if layout.live or with_venv:
        wheel_dir, info, offline, scratch = current_build_wheels(wheels)
        try:
            name = version_name(info)
            click.echo(f"==> installing banger {info.version} into {layout.venv(name)}", err=True)
            created = service.install_venv(layout, name, wheel_dir, offline=offline)
        finally:
            if scratch is not None:
                scratch.cleanup()
    else:  # rendering only: the record names the build it describes
        info = wheel_build_info(wheels) if wheels is not None else build_info()
        name = version_name(info)
    record = service.make_record(layout, person, info, name, network)
    record = service.write_install(layout, _with_created(record, created))
    if not layout.live:
        click.echo(f"rendered banger {record.version} for {record.owner} under {layout.root}:")
        for target in (*record.units, layout.install_toml):
            click.echo(f"  {layout.staged(target)}")
        if not with_venv:
            click.echo(f"  (no virtualenv: the package provides {record.venv} and the {layout.current} link)")
        return
    click.echo("==> starting bangerd-root.service and bangerd.service", err=True)
    service.start_services()
    click.echo(f"banger {record.version} runs as a service for {record.owner}: `banger system status` shows it")


def _with_created(record: InstallRecord, created: list[str]) -> InstallRecord:
    from banger_core.install.record import InstallRecord

    return InstallRecord(**{**record.__dict__, "created_dirs": created})


@cli.command(name="status")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status(app: App, root: Path | None, as_json: bool) -> None:
    """What is installed, whether both units run, and what the daemon answers. Exits 1 when one is down."""
    from banger_core.install import service
    from banger_core.install.layout import DEFAULT_PREFIX
    from banger_core.install.record import load_record

    layout = _layout(root, DEFAULT_PREFIX)
    record = load_record(_record_path(app, layout))
    units: dict[str, str] = {}
    daemon: dict[str, object] | None = None
    if layout.live:
        if service.systemd_is_pid1():
            units = {unit: service.unit_state(unit) for unit in service.UNITS}
        daemon = _daemon_status(record)
    healthy = not layout.live or (all(s == "active" for s in units.values()) and bool(units) and daemon is not None)
    if as_json:
        print_json(
            {"installed": True, "root": str(layout.root), **_record_json(record), "units": units, "daemon": daemon}
        )
    else:
        click.echo(f"banger {record.version} (commit {record.commit[:8]}, built {record.built_at}) installed")
        click.echo(f"  owner   {record.owner} (uid {record.owner_uid})")
        click.echo(f"  venv    {record.venv} (via {record.prefix}/current)")
        click.echo(f"  network bridge {record.network.bridge_name} {record.network.bridge_ip} in {record.network.cidr}")
        if not layout.live:
            click.echo(f"  units   rendered under {layout.root} (not running)")
        elif not units:
            click.echo(f"  units   unknown: {service.NO_SYSTEMD.split(':')[0]}")
        else:
            click.echo("  units   " + ", ".join(f"{unit} {state}" for unit, state in units.items()))
        if layout.live:
            if daemon is None:
                click.echo(f"  daemon  not answering on {record.socket}: `sudo banger system restart`")
            else:
                click.echo(
                    f"  daemon  bangerd {daemon['version']} (commit {str(daemon['commit'])[:8]}) pid {daemon['pid']}"
                )
    if not healthy:
        sys.exit(1)


def _record_json(record: InstallRecord) -> dict[str, object]:
    import dataclasses

    return dataclasses.asdict(record)


def _daemon_status(record: InstallRecord) -> dict[str, object] | None:
    """The service's own ``GET /v1/daemon`` answer, or None when it does not answer."""
    from banger_core.client.connection import Connection
    from banger_core.common.errors import BangerError

    try:
        answer = Connection(socket=Path(record.socket), autostart=False).query("GET", "/v1/daemon")
    except BangerError:
        return None
    return dict(answer) if isinstance(answer, dict) else None


@cli.command(name="restart")
def restart() -> None:
    """Restart bangerd-root.service and bangerd.service (running VMs keep running)."""
    from banger_core.install import service

    service.require_live_host()
    service.systemctl("restart", *service.UNITS)
    click.echo("restarted bangerd-root.service and bangerd.service")


@cli.command(name="uninstall")
@click.option("--purge", is_flag=True, help="Also delete /var/lib/banger and /var/cache/banger (images, VMs, logs).")
@root_option
@pass_app
def uninstall(app: App, purge: bool, root: Path | None) -> None:
    """Stop and remove both services, revert the host changes bangerd-root made, delete the virtualenvs.

    The owner's own files (~/.config/banger, ...) always stay.
    """
    from banger_core.install import service
    from banger_core.install.layout import DEFAULT_PREFIX, Layout
    from banger_core.install.record import load_record

    probe = _layout(root, DEFAULT_PREFIX)
    record_path = _record_path(app, probe)
    record = load_record(record_path)
    layout = Layout(probe.root, record.prefix)
    if layout.live:
        service.require_live_host()
        daemon = _daemon_status(record)
        running = daemon.get("running_vms") if daemon else 0
        if isinstance(running, int) and running > 0:
            raise click.ClickException(
                f"{running} VM(s) still running: stop them first (`banger vm list`, `banger vm stop NAME`)"
            )
        service.systemctl("disable", "--now", *service.UNITS)
        service.revert_host(record, str(record_path), _run_helper)
    removed = service.remove_install(layout, record, purge=purge)
    if layout.live:
        service.systemctl("daemon-reload")
    kept = "" if purge else f"; {record.state_dir} and {record.cache_dir} kept (--purge deletes them)"
    click.echo(f"uninstalled banger {record.version}: removed {len(removed)} path(s){kept}")


def _run_helper(argv: list[str]) -> None:
    import subprocess

    from banger_core.common.errors import BangerError

    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BangerError(f"bangerd-root --revert failed ({detail}): the services are stopped; fix it and run again")
