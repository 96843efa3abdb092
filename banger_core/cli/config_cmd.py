"""``banger config show``: every key, its effective value and where it came from."""

from __future__ import annotations

import json

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json, table
from banger_core.config import display_path


@click.group(name="config")
def cli() -> None:
    """Show the effective configuration (file: $XDG_CONFIG_HOME/banger/config.toml)."""


@cli.command(name="show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print each config key with its value and source (default or the file).

    Unset keys without a default show as empty. Keys are declared by the core
    and by plugins (the Plugin column).
    """
    config = app.config
    rows = config.rows()
    if as_json:
        print_json({"file": str(config.path), "exists": config.path.exists(), "settings": rows})
        return
    click.echo(f"config file: {display_path(config.path)}{'' if config.path.exists() else ' (not present)'}")
    body = [
        (
            r["key"],
            "" if r["value"] is None else (json.dumps(r["value"]) if not isinstance(r["value"], str) else r["value"]),
            r["source"] if r["value"] is not None else "unset",
            r["plugin"],
        )
        for r in rows
    ]
    click.echo(table(["Key", "Value", "Source", "Plugin"], body))
