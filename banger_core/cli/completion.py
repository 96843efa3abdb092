"""Shell completion: ``banger completion SHELL`` and the completers for live names.

Commands and flags complete through click's own machinery (the root group's
lazy ``get_command`` loads each command on demand). Names of things that exist
(VMs, images, kernels) are asked from the daemon over its Unix socket with a
short timeout; names of things plugins provide (backends, networks, image
sources, kernel providers) come from the plugins installed here.

Completion runs on every Tab press, so it never starts the daemon and never
prints: with no daemon answering, live names complete to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

from banger_core.cli.app import App

if TYPE_CHECKING:
    from banger_core.common.plugins import PluginManager, Provided

#: Seconds the daemon gets to answer one completion request: longer feels like a hung shell.
QUERY_TIMEOUT = 0.5

#: Live resource kinds: the API path listing them, the field naming each one and the field shown beside it.
#: A new kind (sessions, once the API lists them) is one entry here plus ``shell_complete=daemon_names("session")``
#: on the arguments that take one.
RESOURCES: dict[str, tuple[str, str, str]] = {
    "vm": ("/v1/vms", "name", "state"),
    "image": ("/v1/images", "name", "source"),
    "kernel": ("/v1/kernels", "ref", "provider"),
}

#: Names plugins register: the provider hook behind each kind.
#: Completable plugin registrations: kind -> the plugin manager's typed accessor for that hook.
PROVIDED: dict[str, Callable[[PluginManager], Mapping[str, Provided[object]]]] = {
    "backend": lambda pm: pm.vmm_backends(),
    "network": lambda pm: pm.network_backends(),
    "image-source": lambda pm: pm.image_sources(),
    "kernel-provider": lambda pm: pm.kernel_providers(),
}

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]

#: How to load each shell's script, shown by ``banger completion --help``.
RECIPES: dict[str, str] = {
    "bash": 'add to ~/.bashrc:   eval "$(banger completion bash)"',
    "zsh": 'add to ~/.zshrc (after compinit):   eval "$(banger completion zsh)"',
    "fish": "run once:   banger completion fish > ~/.config/fish/completions/banger.fish",
}


def _env(ctx: click.Context) -> Mapping[str, str]:
    app = ctx.find_object(App)
    return app.env if app is not None else os.environ


def query_names(env: Mapping[str, str], kind: str, timeout: float = QUERY_TIMEOUT) -> list[tuple[str, str]]:
    """``(name, detail)`` of each ``kind`` the daemon knows; ``[]`` when no daemon answers in ``timeout``.

    The stdlib transport, not the SDK: the SDK starts a daemon that does not
    answer, and importing httpx or pydantic would cost more than the request.
    """
    import json

    from banger_core.client.transport import exchange
    from banger_core.common import paths
    from banger_core.common.errors import BangerError

    path, name_field, detail_field = RESOURCES[kind]
    try:
        status, content = exchange(str(paths.socket_path(env)), "GET", path, timeout=timeout)
        if status != 200:
            return []
        listed = json.loads(content)
    except (OSError, ValueError, BangerError):
        # No daemon, a slow one, a bad config.toml or a garbled answer: complete nothing, say nothing.
        return []
    if not isinstance(listed, list):
        return []
    return [
        (str(item[name_field]), str(item.get(detail_field) or ""))
        for item in listed
        if isinstance(item, dict) and isinstance(item.get(name_field), str)
    ]


def daemon_names(kind: str) -> Completer:
    """A ``shell_complete`` callback completing the names of ``kind`` (a key of :data:`RESOURCES`)."""
    if kind not in RESOURCES:
        raise ValueError(f"unknown resource kind {kind!r} (known: {', '.join(RESOURCES)})")

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        return [
            CompletionItem(name, help=detail or None)
            for name, detail in query_names(_env(ctx), kind)
            if name.startswith(incomplete)
        ]

    return complete


def provided_names(kind: str) -> Completer:
    """A ``shell_complete`` callback completing what installed plugins register (a key of :data:`PROVIDED`)."""
    accessor = PROVIDED[kind]

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from banger_core.common.errors import BangerError
        from banger_core.common.plugins import get_plugin_manager

        try:
            # Its own manager, not the App's: that one prints plugin load failures, fine for a command, noise on Tab.
            provided = accessor(get_plugin_manager(dict(_env(ctx))))
        except BangerError:
            return []
        return [
            CompletionItem(name, help=getattr(p.value, "description", None) or None)
            for name, p in sorted(provided.items())
            if name.startswith(incomplete)
        ]

    return complete


complete_vms = daemon_names("vm")
complete_images = daemon_names("image")
complete_kernels = daemon_names("kernel")
complete_backends = provided_names("backend")
complete_networks = provided_names("network")
complete_image_sources = provided_names("image-source")
complete_kernel_providers = provided_names("kernel-provider")


def _recipes() -> str:
    return "\n".join(f"  {shell:<5} {recipe}" for shell, recipe in RECIPES.items())


@click.command(
    name="completion",
    epilog=f"\b\nLoading it:\n{_recipes()}\n\n\bNames of VMs, images and kernels come from a running daemon "
    "(asked with a short timeout); completion never starts one.",
)
@click.argument("shell", metavar="SHELL", type=click.Choice(sorted(RECIPES)))
def cli(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    It completes commands, flags, the names of VMs, images and kernels,
    and backend, network, image source and kernel provider names.
    """
    from click.shell_completion import get_completion_class

    from banger_core.cli.app import cli as root

    completion_class = get_completion_class(shell)
    if completion_class is None:  # click knows every shell RECIPES names; this guards a click without one
        raise click.UsageError(f"this click has no {shell} completion")
    click.echo(completion_class(root, {}, "banger", "_BANGER_COMPLETE").source(), nl=False)
