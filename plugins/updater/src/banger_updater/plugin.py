"""Entry point of banger-updater: the ``update`` command and its ``update_*`` config keys (docs/updating.md).

Imported on every CLI call: the command module (click only) loads when the CLI lists its
commands, and everything heavy (httpx, sigstore, the install code) only when ``update`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from banger_hookspecs import ConfigOption, hookimpl

if TYPE_CHECKING:
    import click

#: Where releases are published (index.json, then {version}/manifest.json, its bundle, the wheelhouse).
DEFAULT_RELEASE_URL = "https://banger-dev.github.io/banger/releases"
#: The certificate identity of banger's release workflow: only what it signed is installed.
DEFAULT_IDENTITY = "https://github.com/banger-dev/banger/.github/workflows/release.yml@refs/heads/main"
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption(
            "update_release_url",
            "str",
            default=DEFAULT_RELEASE_URL,
            help="where `banger update` finds releases (http(s):// or file://; forks and tests point it elsewhere)",
        ),
        ConfigOption(
            "update_identity",
            "str",
            default=DEFAULT_IDENTITY,
            help="the signing certificate identity a release manifest must carry (the release workflow)",
        ),
        ConfigOption(
            "update_issuer",
            "str",
            default=DEFAULT_ISSUER,
            help="the OIDC issuer that must have vouched for update_identity",
        ),
    ]


@hookimpl
def banger_cli_commands() -> Iterable[click.Command]:
    from banger_updater.command import update

    return [update]
