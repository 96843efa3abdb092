"""``banger config show``: every key, its effective value and where it came from."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json, table
from banger_core.common.config import Config, display_path


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
    daemon = _daemon_config(app, config)
    if as_json:
        print_json(
            {
                "file": str(config.path),
                "exists": config.path.exists(),
                "sha256": config.digest,
                "daemon": daemon,
                "settings": rows,
            }
        )
        return
    click.echo(f"config file: {display_path(config.path)}{'' if config.path.exists() else ' (not present)'}")
    click.echo(f"daemon:      {_daemon_line(daemon, config)}")
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


def _daemon_config(app: App, config: Config) -> dict[str, Any] | None:
    """Which config the running daemon uses and whether the file on disk is the same (None: no daemon)."""
    from banger_core.client import Client

    with Client(app.env, autostart=False) as client:
        if not client.ping():
            return None
        status = client.daemon.status()
    if status.config is None:  # a daemon older than this CLI does not say
        return None
    running = status.config.model_dump()
    same = running["path"] == str(config.path) and running["sha256"] == config.digest
    return {"pid": status.pid, **running, "same_as_disk": same}


def _daemon_line(daemon: dict[str, Any] | None, config: Config) -> str:
    if daemon is None:
        return "not running (it reads the file when it starts)"
    path = display_path(Path(daemon["path"]))
    if daemon["sha256"] is None:
        version = "no file (defaults)"
    else:
        modified = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(daemon["mtime"]))
        version = f"sha256 {daemon['sha256'][:12]}, modified {modified}"
    line = f"pid {daemon['pid']} runs with {path} ({version})"
    if daemon["same_as_disk"]:
        return f"{line}: same as on disk"
    if daemon["path"] != str(config.path):
        return f"{line}, not with this file (another BANGER_CONFIG or XDG_CONFIG_HOME): `banger daemon restart` here"
    return f"{line}: the file on disk differs: {daemon['problem'] or 'applied on the next request'}"
