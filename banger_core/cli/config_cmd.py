"""``banger config show`` (every key explained, its value and where it came from) and ``banger config edit``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import print_json
from banger_core.common.config import Config, ConfigRow, JsonValue, display_path, type_text
from banger_core.common.errors import BangerError
from banger_hookspecs import ConfigOption

#: Tried in this order when EDITOR is unset (Debian's choice first).
EDITOR_FALLBACKS = ("sensible-editor", "editor", "nano", "vi")
#: What `config edit` opens when there is no file yet.
NEW_FILE = (
    "# banger's configuration: every key is optional.\n"
    "# `banger config show` explains each key; docs/config.md has examples.\n"
)


@click.group(name="config")
def cli() -> None:
    """Show, explain and edit the configuration ($XDG_CONFIG_HOME/banger/config.toml, or $BANGER_CONFIG)."""


@cli.command(name="show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def show(app: App, as_json: bool) -> None:
    """Explain every key: value, source, meaning, type and default.

    Keys are declared by the core and by plugins (a plugin's keys say so).
    Unset keys without a default show as unset.
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
    for row in rows:
        click.echo("")
        click.echo("\n".join(_explain(row, config.options[row["key"]])))


def _toml(value: JsonValue) -> str:
    """A value as it would be written in config.toml."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _explain(row: ConfigRow, option: ConfigOption) -> list[str]:
    """The lines `config show` prints for one key."""
    plugin = f", plugin {row['plugin']}" if row["plugin"] not in ("core", "") else ""
    if row["value"] is None:
        head = f"{row['key']}  # unset{plugin}"
    else:
        head = f"{row['key']} = {_toml(row['value'])}  # {row['source']}{plugin}"
    what = type_text(option)
    if option.default is not None:
        what += f"; default {_toml(row['default'])}"
    if row["aliases"]:
        what += f"; also accepted as {', '.join(row['aliases'])}"
    lines = [head, *(_wrapped(_sentence(text), "    ") for text in (option.help, what))]
    for field in option.fields:
        required = ", required" if field.required else ""
        lines.append(_wrapped(f"{field.key}: {type_text(field)}{required}: {field.help}", "      "))
    return lines


def _wrapped(text: str, indent: str) -> str:
    return click.wrap_text(text, width=100, initial_indent=indent, subsequent_indent=indent)


def _sentence(text: str) -> str:
    """Plugins write help as fragments ("bridge the VMs' taps attach to"): print sentences."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", ")", "!")) else ".")


@cli.command(name="edit")
@pass_app
def edit(app: App) -> None:
    """Edit config.toml in $EDITOR; only an edit that validates is saved.

    \b
    An invalid edit prints what is wrong and offers to edit again; declining
    keeps the file as it was (the edit is kept beside it as config.toml.rejected).
    Without EDITOR: sensible-editor, editor, nano or vi, the first found.
    A running daemon applies the new file from its next request.
    """
    from banger_core.common import paths

    env = app.env
    path = paths.config_file(env)
    shown = display_path(path, env)
    real = path.resolve()  # a symlinked config.toml stays a link: the file it points to is replaced
    try:
        original = real.read_bytes()
    except FileNotFoundError:
        original = None
    except OSError as exc:
        raise BangerError(f"cannot read {shown}: {exc.strerror}") from None
    argv = _editor_argv(env)
    real.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    draft = _write_draft(real, original if original is not None else NEW_FILE.encode())
    try:
        content = _edit_until_valid(app, argv, draft, path, shown)
        if content is None:
            rejected = real.with_name(real.name + ".rejected")
            os.replace(draft, rejected)
            raise BangerError(f"{shown} left as it was; your edit is in {display_path(rejected, env)}")
        if content == (original if original is not None else NEW_FILE.encode()):
            click.echo(f"{shown}: no changes")
            return
        if original is not None:
            os.chmod(draft, real.stat().st_mode & 0o7777)
        os.replace(draft, real)
    finally:
        draft.unlink(missing_ok=True)
    click.echo(f"saved {shown}: a running daemon applies it from its next request")


def _editor_argv(env: Mapping[str, str]) -> list[str]:
    """The editor as an argv list (EDITOR may carry flags, e.g. ``code --wait``); never run through a shell."""
    import shlex
    import shutil

    configured = env.get("EDITOR", "").strip()
    if configured:
        try:
            argv = shlex.split(configured)
        except ValueError as exc:
            raise BangerError(f"EDITOR={configured!r} is not a command line ({exc}): fix EDITOR") from None
        if argv:
            return argv
    for name in EDITOR_FALLBACKS:
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return [found]
    raise BangerError(f"no editor: set EDITOR (none of {', '.join(EDITOR_FALLBACKS)} is installed)")


def _write_draft(real: Path, content: bytes) -> Path:
    """A private copy to edit, beside the file so replacing it is one rename."""
    import tempfile

    fd, name = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".toml")
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    return Path(name)


def _edit_until_valid(app: App, argv: list[str], draft: Path, path: Path, shown: str) -> bytes | None:
    """The draft's content once it validates, or None when the user stops trying."""
    import subprocess

    from banger_core.common.config import ConfigError, load_config

    while True:
        try:
            done = subprocess.run([*argv, str(draft)], env=app.env, check=False)
        except OSError as exc:
            raise BangerError(f"cannot run the editor {argv[0]!r}: {exc.strerror}: fix EDITOR") from None
        if done.returncode != 0:
            raise BangerError(f"the editor {argv[0]!r} exited with status {done.returncode}: {shown} left as it was")
        content = draft.read_bytes()
        try:
            load_config(app.pm, app.env, path, content=content)
        except ConfigError as exc:
            click.echo(f"banger: error: {exc}", err=True)
            try:
                again = click.confirm("Edit again?", default=True, err=True)
            except click.Abort:  # no answer (stdin closed): keep the old file
                again = False
            if not sys.stdin.isatty():  # a terminal echoed the answer and its newline; a pipe did not
                click.echo("", err=True)
            if again:
                continue
            return None
        return content


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
