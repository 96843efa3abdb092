"""``banger update``: the click command (imports click only; the work is in :mod:`banger_updater.run`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from banger_core.cli.app import App, pass_app

if TYPE_CHECKING:
    from banger_core.api.events import EventSink
    from banger_updater.release import Version
    from banger_updater.swap import Installation

#: ``banger update --check``'s exit status when a newer release is available (0: up to date, 1: error).
EXIT_UPDATE_AVAILABLE = 10


@click.command(name="update")
@click.option(
    "--check", is_flag=True, help=f"Only say whether a newer release exists (exit {EXIT_UPDATE_AVAILABLE} if so)."
)
@click.option("--to", "to", metavar="vX.Y.Z", help="Install this release (the only way to go to an older one).")
@click.option("--dry-run", is_flag=True, help="Verify, download and build the release, then remove it: no switch.")
@click.option("--rollback", is_flag=True, help="Switch back to the version kept from the last update.")
@click.option(
    "--root",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    metavar="DIR",
    help="Update the install rendered under DIR (`system install --root`): no services restarted, no doctor.",
)
@click.option("--json", "as_json", is_flag=True, help="With --check: machine-readable output.")
@pass_app
def update(
    app: App, check: bool, to: str | None, dry_run: bool, rollback: bool, root: Path | None, as_json: bool
) -> None:
    """Update the installed banger to a signed release (needs root on a live install).

    \b
    Reads update_release_url's index, verifies the release manifest's Sigstore
    signature (update_identity, update_issuer), checks the wheelhouse's sha256
    and size against it, builds PREFIX/versions/VERSION offline, flips
    PREFIX/current, rewrites install.toml, restarts bangerd-root.service then
    bangerd.service and runs doctor. Any failure after the flip goes back.
    Exit status: 0 done (or up to date), 1 error; --check: 0 up to date,
    10 a newer release is available, 1 error. See docs/updating.md.
    """
    from banger_core.api.events import EventSink
    from banger_core.cli.progress import ProgressPrinter
    from banger_core.common.errors import BangerError
    from banger_updater.release import Version

    if sum((check, rollback, to is not None)) > 1 or (dry_run and (check or rollback)):
        raise BangerError("--check, --to and --rollback exclude each other (and --dry-run goes with an update only)")
    if as_json and not check:
        raise BangerError("--json goes with --check")
    version = Version.parse(to, what="--to") if to is not None else None
    printer = ProgressPrinter(app.verbose, quiet=app.quiet or as_json)
    progress = EventSink(printer)
    try:
        if check:
            code = _check(app, root, progress, as_json)
        else:
            click.echo(_change(app, root, version, dry_run, rollback, progress))
            code = 0
    finally:
        printer.done()
    if code:
        click.get_current_context().exit(code)


def _check(app: App, root: Path | None, progress: EventSink, as_json: bool) -> int:
    from banger_core.cli.output import print_json
    from banger_updater.run import Updater

    current = _installed_version(app, root)
    updater = Updater(app.config, progress)
    try:
        found = updater.check(current)
    finally:
        updater.close()
    if as_json:
        print_json(found.to_json())
    elif found.newest is None:
        click.echo(f"banger {current}; no release is published yet")
    elif found.available:
        click.echo(f"banger {current}; {found.newest.version} is available: `sudo banger update` installs it")
    else:
        click.echo(f"banger {current} is up to date (newest release {found.newest.version})")
    return EXIT_UPDATE_AVAILABLE if found.available else 0


def _change(
    app: App, root: Path | None, version: Version | None, dry_run: bool, rollback: bool, progress: EventSink
) -> str:
    from banger_updater import run

    inst = _installation(app, root)
    services = run.services_for(inst)
    if inst.live:
        from banger_core.common.errors import BangerError
        from banger_core.install.service import systemd_is_pid1

        if not systemd_is_pid1():
            raise BangerError("PID 1 is not systemd, so no service runs here: --root DIR updates a rendered install")
        if os.geteuid() != 0:
            raise BangerError("banger update replaces the installed service: run it with sudo (--check needs no root)")
        inst.require_root_owned()
    else:
        progress.step(f"--root {inst.layout.root}: the rendered install is updated; no service restarted, no doctor")
    with inst.locked():
        if rollback:
            return run.rollback(inst, services, progress)
        updater = run.Updater(app.config, progress)
        try:
            wanted = updater.choose(inst, version)
            if isinstance(wanted, str):
                return wanted
            return updater.install(inst, wanted, services, dry_run=dry_run)
        finally:
            updater.close()


def _installation(app: App, root: Path | None) -> Installation:
    from banger_core.common.paths import INSTALL_TOML, install_toml
    from banger_updater.swap import Installation

    if root is None:
        return Installation(Path("/"), install_toml(app.env))
    root = root.absolute()
    return Installation(root, root / INSTALL_TOML.lstrip("/"))


def _installed_version(app: App, root: Path | None) -> str:
    """install.toml's version when banger is installed (or rendered under ``root``), else this build's."""
    from banger_core.common.buildinfo import build_info
    from banger_core.common.paths import INSTALL_TOML, install_toml
    from banger_core.install.record import load_record

    record = (root.absolute() / INSTALL_TOML.lstrip("/")) if root is not None else install_toml(app.env)
    if not record.exists():
        return build_info().version
    return load_record(record).version
