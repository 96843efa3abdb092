"""``banger version``: the long form of ``--version``, plus the running daemon's and the installed service's."""

from __future__ import annotations

import click

from banger_core.cli.app import App, pass_app
from banger_core.common.buildinfo import build_info


@click.command(name="version")
@pass_app
def cli(app: App) -> None:
    """Print version, full commit and build time, one per line.

    \b
    Then, when known, the running daemon's (`daemon:`, never started for this)
    and the installed service's (`installed:`, from /etc/banger/install.toml).
    `banger doctor` warns when they differ.
    """
    info = build_info()
    click.echo(f"version: {info.version}")
    click.echo(f"commit:  {info.commit}")
    click.echo(f"built:   {info.built}")
    from banger_core.client.connection import Connection
    from banger_core.common import paths
    from banger_core.common.errors import BangerError

    connection = Connection(app.env, autostart=False)
    if connection.ping():
        try:
            answer = connection.query("GET", "/v1/daemon")
        except BangerError:
            answer = None
        if isinstance(answer, dict):
            commit = str(answer.get("commit"))
            click.echo(f"daemon:  {answer.get('version')} (commit {commit[:8]}, pid {answer.get('pid')})")
    if paths.installed_socket(app.env) is not None:
        from banger_core.install.record import load_record

        try:
            record = load_record(paths.install_toml(app.env))
        except BangerError as exc:
            click.echo(f"installed: unreadable ({exc})")
            return
        click.echo(
            f"installed: {record.version} (commit {record.commit[:8]}, built {record.built_at}) in {record.venv}"
        )
