"""Tables, JSON and one-line errors for the CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from banger_core.cli.tables import table as table  # re-exported: commands import it from here

if TYPE_CHECKING:
    from banger_core.api.models import ApiModel


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_models(data: ApiModel | Sequence[ApiModel]) -> None:
    """``--json`` output: API models exactly as the API sends them."""
    if isinstance(data, Sequence):
        print_json([item.model_dump(mode="json") for item in data])
    else:
        print_json(data.model_dump(mode="json"))


def warn(message: str) -> None:
    click.echo(message, err=True)


def fail(message: str, code: int = 1) -> None:
    """Print ``banger: error: MESSAGE`` and exit ``code``."""
    click.echo(f"banger: error: {message}", err=True)
    sys.exit(code)
