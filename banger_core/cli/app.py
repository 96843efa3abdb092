"""The root ``banger`` click group and the state commands share through ``ctx.obj``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from banger_core.cli.output import warn
from banger_core.common.errors import BangerError

if TYPE_CHECKING:
    from banger_core.common.config import Config
    from banger_core.common.plugins import PluginManager
    from banger_hookspecs import PluginContext

#: Core command modules, imported lazily; each defines ``cli`` (a click command).
CORE_COMMANDS: dict[str, tuple[str, str]] = {
    "vm": ("banger_core.cli.vm_cmd", "Create, run, inspect and remove VMs."),
    "image": ("banger_core.cli.image_cmd", "Pull, list and delete images."),
    "kernel": ("banger_core.cli.kernel_cmd", "Pull, list and delete kernels."),
    "daemon": ("banger_core.cli.daemon_cmd", "Inspect, stop and restart the background daemon."),
    "ssh-config": ("banger_core.cli.sshconfig_cmd", "Make `ssh NAME.vm` reach banger's VMs."),
    "config": ("banger_core.cli.config_cmd", "Show, explain and edit the configuration."),
    "doctor": ("banger_core.cli.doctor_cmd", "Check this host can run VMs, and say what to fix."),
    "plugins": ("banger_core.cli.plugins_cmd", "List and inspect plugins."),
    "version": ("banger_core.cli.version_cmd", "Print version, commit and build time."),
    "web": ("banger_core.cli.web_cmd", "Print (or open) a login link for the web UI."),
    "completion": ("banger_core.cli.completion", "Print the shell completion script for bash, zsh or fish."),
    "system": ("banger_core.cli.system_cmd", "Install banger as a system service (systemd), inspect or remove it."),
}


class App:
    """Per-invocation state: built lazily so cheap commands stay cheap.

    (A plain class, not a dataclass: importing dataclasses costs more than this whole module.)
    """

    def __init__(self, env: dict[str, str] | None = None, verbose: int = 0, quiet: bool = False) -> None:
        self.env = dict(os.environ) if env is None else env
        self.verbose = verbose
        self.quiet = quiet  # no progress display: errors, warnings and the answer only
        self._pm: PluginManager | None = None
        self._config: Config | None = None

    @property
    def pm(self) -> PluginManager:
        if self._pm is None:
            from banger_core.common.plugins import get_plugin_manager

            self._pm = get_plugin_manager(self.env)
            if "_BANGER_COMPLETE" not in self.env:  # on Tab the report would land inside the command line
                self.report_failed_plugins()
        return self._pm

    def report_failed_plugins(self) -> None:
        assert self._pm is not None
        for record in self._pm.failed():
            warn(record.load_error_line())
            if self.verbose and record.traceback:
                warn(record.traceback.rstrip())

    @property
    def config(self) -> Config:
        if self._config is None:
            from banger_core.common.config import load_config

            self._config = load_config(self.pm, self.env)
            for line in self._config.warnings:
                warn(f"banger: warning: {line}")
        return self._config

    def plugin_context(self) -> PluginContext:
        from banger_core.common.context import UnprivilegedHostOps, make_context

        return make_context(self.config, UnprivilegedHostOps(), env=self.env)


pass_app = click.make_pass_decorator(App)


class RootGroup(click.Group):
    """Core commands load on demand; plugin commands come from ``banger_cli_commands``."""

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        app = ctx.ensure_object(App)
        commands: dict[str, click.Command] = {}
        for plugin_name, provided in app.pm.cli_commands():
            if isinstance(provided, Exception):  # a broken plugin must not break the CLI
                warn(f"banger: warning: plugin {plugin_name}: banger_cli_commands raised: {provided}")
                continue
            for command in provided:
                if command.name in CORE_COMMANDS or command.name in commands or command.name is None:
                    warn(f"banger: warning: plugin {plugin_name}: command {command.name!r} clashes, ignored")
                    continue
                commands[command.name] = command
        return commands

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BangerError as exc:
            click.echo(f"banger: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug (ours or a plugin's): one line, the traceback on request
            app = ctx.find_object(App)
            if app is not None and app.verbose:
                import traceback

                click.echo(traceback.format_exc().rstrip(), err=True)
            click.echo(
                f"banger: error: internal error: {type(exc).__name__}: {exc} (run with -v for details)", err=True
            )
            ctx.exit(70)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*CORE_COMMANDS, *self.commands, *self._plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in CORE_COMMANDS:
            import importlib

            module = importlib.import_module(CORE_COMMANDS[cmd_name][0])
            command: click.Command = module.cli
            return command
        return self._plugin_commands(ctx).get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help of core commands without importing their modules.
        rows = []
        for name in self.list_commands(ctx):
            if name in CORE_COMMANDS and name not in self.commands:
                rows.append((name, CORE_COMMANDS[name][1]))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=formatter.width - 20)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from banger_core.common.buildinfo import build_info

    click.echo(build_info().line("banger"))
    ctx.exit()


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print one version line.",
)
@click.option("-v", "--verbose", count=True, help="More detail (tracebacks of failed plugins, tool output).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (errors and warnings still show).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """banger: one-command development sandboxes on Firecracker microVMs.

    \b
    Quick start:
      banger vm run                       boot the default image, open a shell
      banger vm run ./repo -- make test   ship a repo in, run a command, get its exit code
      banger doctor                       what this host can run, and what to fix
    """
    app = ctx.ensure_object(App)
    app.verbose = verbose
    app.quiet = quiet


def run(argv: list[str] | None = None) -> None:
    """Entry point; :class:`BangerError` becomes one ``banger: error:`` line and its exit code."""
    cli.main(args=argv, prog_name="banger", standalone_mode=True, obj=App())
