"""Fixtures for banger-image-example's tests, on top of banger's pytest kit (``pytest -p banger_core.testing``)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from banger_core.testing import FakeSite

PROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.fixture(autouse=True)
def installed(banger_env: dict[str, str], banger_site: FakeSite) -> dict[str, str]:
    """Every test sees this plugin installed, loaded by banger through its ``banger`` entry point.

    When the distribution is installed (``pip install -e .``, ``tox -e example``) banger finds it
    already; otherwise the entry point declared in pyproject.toml is written as the ``.dist-info``
    that ``pip install`` would leave behind. Autouse, so it happens before ``plugin_manager`` or
    ``plugin_context`` are built.
    """
    project = tomllib.loads(PROJECT.read_text())["project"]
    try:
        metadata.distribution(project["name"])
    except metadata.PackageNotFoundError:
        banger_site.write_dist_info(project["name"], project["version"], project["entry-points"]["banger"])
    return banger_env
