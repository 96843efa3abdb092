"""``banger version``: the long form of ``--version``."""

from __future__ import annotations

import click

from banger_core.common.buildinfo import build_info


@click.command(name="version")
def cli() -> None:
    """Print version, full commit and build time, one per line."""
    info = build_info()
    click.echo(f"version: {info.version}")
    click.echo(f"commit:  {info.commit}")
    click.echo(f"built:   {info.built}")
