"""``banger doctor``: one row per check from the core and every plugin."""

from __future__ import annotations

import sys

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json
from banger_core.common.doctor import DoctorRow, run_checks

_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "info": "info"}


@click.command(name="doctor")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def cli(app: App, as_json: bool) -> None:
    """Check this host can run VMs, and say what to fix.

    Exits 1 when a failing check makes `banger vm run` impossible.
    """
    rows = run_checks(app.pm, app.plugin_context())
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
