"""Helpers for commands that talk to the daemon (progress display: :mod:`banger_core.cli.progress`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from banger_core.cli.app import App

if TYPE_CHECKING:
    from banger_core.client import Client
    from banger_core.common.ssh import SshTarget


def get_client(app: App) -> Client:
    from banger_core.client import Client

    return Client(app.env, notify=lambda line: click.echo(line, err=True))


def ssh_target(client: Client, name: str) -> SshTarget:
    """How to reach running VM ``name`` with ssh, as the daemon says."""
    from banger_core.common.ssh import SshTarget

    return SshTarget(**client.vms.ssh_target(name).model_dump())
