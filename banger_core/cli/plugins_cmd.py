"""``banger plugins``: what is installed, where from, and whether it loaded."""

from __future__ import annotations

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json, table
from banger_hookspecs import specs


@click.group(name="plugins")
def cli() -> None:
    """List and inspect plugins (builtins load through the same entry points as yours)."""


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--hook", "hook", metavar="NAME", help="Only plugins implementing hook NAME (with or without banger_).")
@pass_app
def list_plugins(app: App, as_json: bool, hook: str | None) -> None:
    """List plugins: name, version, source (builtin|external), status (active|blocked|failed), hooks.

    \b
    Block plugins with BANGER_DISABLE_PLUGINS=name1,name2; load none but the
    core with BANGER_NO_PLUGINS=1. Use -v to see why a plugin failed.
    """
    records = app.pm.plugin_records()
    if hook:
        wanted = hook.removeprefix("banger_")
        known = {name.removeprefix("banger_") for name in dir(specs) if name.startswith("banger_")}
        if wanted not in known:
            raise click.BadParameter(f"unknown hook {hook!r}; known: {', '.join(sorted(known))}", param_hint="--hook")
        records = [r for r in records if wanted in r.hooks]
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    rows = [(r.name, r.version or "-", r.source, r.status, ", ".join(r.hooks) or "-") for r in records]
    click.echo(table(["Name", "Version", "Source", "Status", "Hooks"], rows))
    for record in records:
        if record.status != "active" and app.verbose:
            click.echo(f"\n{record.name}: {record.error}", err=True)
            if record.traceback and app.verbose > 1:
                click.echo(record.traceback.rstrip(), err=True)
