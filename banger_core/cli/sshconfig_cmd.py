"""``banger ssh-config``: use plain `ssh NAME.vm` with banger's key and pinned host keys."""

from __future__ import annotations

import click

from banger_core.cli.app import App, pass_app


@click.command(name="ssh-config")
@click.option("--install", "action", flag_value="install", help="Add the Include line to ~/.ssh/config (fenced).")
@click.option("--uninstall", "action", flag_value="uninstall", help="Remove exactly what --install added.")
@pass_app
def cli(app: App, action: str | None) -> None:
    """Print the line that makes `ssh NAME.vm` (and scp, rsync, VS Code) reach banger's VMs.

    banger keeps ~/.config/banger/ssh_config current (a Host entry per running
    VM, plus `Host *.vm` with banger's key, its known_hosts and User root).
    banger never edits ~/.ssh/config on its own: --install adds the Include
    inside marker lines at the top, --uninstall removes exactly those lines.
    """
    from banger_core.common import sshconfig

    if action == "install":
        changed = sshconfig.install(app.env)
        click.echo("added to ~/.ssh/config" if changed else "already in ~/.ssh/config")
    elif action == "uninstall":
        changed = sshconfig.uninstall(app.env)
        click.echo("removed from ~/.ssh/config" if changed else "not in ~/.ssh/config: nothing to remove")
    else:
        click.echo(sshconfig.include_line(app.env))
