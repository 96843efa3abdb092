"""Shared helpers for banger-debootstrap's tests (through the ``kit`` fixture)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

MINIMAL = """\
schema = 1
name = "tiny"
description = "a tiny image"
suite = "bookworm"
packages = ["openssh-server"]

[options.extra]
default = false
description = "more"
packages = ["jq"]
late_packages = ["linux-image-cloud-amd64"]

[variants]
tiny-extra = ["extra"]

[[files]]
dest = "/etc/motd"
src = "motd"

[[files]]
dest = "/etc/extra"
content = "on\\n"
when = "extra"

[[steps]]
action = "mask"
units = ["getty@.service"]
when = "!extra"
"""


def write_recipe(tmp_path: Path, text: str = MINIMAL, name: str = "tiny") -> Path:
    recipe_dir = tmp_path / name
    (recipe_dir / "files").mkdir(parents=True)
    (recipe_dir / "files/motd").write_text("hello\n")
    (recipe_dir / "recipe.toml").write_text(textwrap.dedent(text))
    return recipe_dir


@pytest.fixture
def kit() -> SimpleNamespace:
    """``kit.MINIMAL`` (a small valid recipe) and ``kit.write_recipe(dir, text, name)``."""
    return SimpleNamespace(MINIMAL=MINIMAL, write_recipe=write_recipe)
