"""``banger doctor``: one row per check from the core and every plugin."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json
from banger_core.common.buildinfo import UNKNOWN, BuildInfo, build_info
from banger_core.common.doctor import DoctorRow, run_checks, version_finding, version_row
from banger_core.common.errors import BangerError

_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "info": "info"}


@click.command(name="doctor")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def cli(app: App, as_json: bool) -> None:
    """Check this host can run VMs, and say what to fix.

    Exits 1 when a failing check makes `banger vm run` impossible.
    """
    rows = [*run_checks(app.pm, app.plugin_context()), version_drift_row(app.env)]
    blocking = [r for r in rows if r["status"] == "fail" and r["blocks_vm_run"]]
    if as_json:
        print_json({"checks": rows, "vm_run_possible": not blocking})
    else:
        _print(rows)
        if blocking:
            click.echo(f"\n{len(blocking)} failing check(s) block `banger vm run`.")
        else:
            click.echo("\n`banger vm run` can work on this host.")
    if blocking:
        sys.exit(1)


def _print(rows: list[DoctorRow]) -> None:
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        click.echo(f"{_MARK[row['status']]:<4}  {row['name']:<{width}}  {row['summary']}")
        if row["hint"] and row["status"] in ("warn", "fail"):
            click.echo(f"{'':<4}  {'':<{width}}  -> {row['hint']}")


def version_drift_row(env: Mapping[str, str]) -> DoctorRow:
    """:func:`version_row` for this CLI, the daemon it talks to (never started for this) and install.toml."""
    from banger_core.client.connection import Connection
    from banger_core.common import paths

    daemon = None
    try:
        answer = Connection(env, autostart=False).query("GET", "/v1/daemon")
    except BangerError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("version"), str) and isinstance(answer.get("commit"), str):
        daemon = BuildInfo(str(answer["version"]), str(answer["commit"]), UNKNOWN)
    installed = None
    if paths.installed_socket(env) is not None:
        from banger_core.install.record import load_record

        try:
            record = load_record(paths.install_toml(env))
        except BangerError as exc:
            return version_finding(
                "warn", f"install.toml unreadable: {exc}", "`sudo banger system install` rewrites it"
            )
        installed = BuildInfo(record.version, record.commit, record.built_at)
    return version_row(build_info(), daemon, installed)
