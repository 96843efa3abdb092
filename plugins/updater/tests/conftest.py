"""Fixtures of the updater's tests: published test releases and an install rendered by ``system install --root``.

Both are made once per session (building a venv costs seconds) and copied per test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from banger_core.testing import invoke_cli, isolated_env
from banger_core.testing.sigstore_lab import TEST_IDENTITY, TEST_ISSUER, TrustLab
from plugins.updater.tests.release_lab import banger_wheel, publish

#: The releases the session publishes; the rendered install runs the first.
VERSIONS = ("v0.1.0", "v0.2.0", "v0.3.0")
#: An account every Debian system has: `system install` wants a real, unprivileged owner.
OWNER = "daemon"


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory, trust_lab: TrustLab) -> Path:
    """A release directory holding VERSIONS, signed by the session's lab."""
    base = tmp_path_factory.mktemp("published")
    for version in VERSIONS:
        publish(base, version, trust_lab)
    return base


@pytest.fixture
def releases(published: Path, tmp_path: Path) -> Path:
    """This test's copy of the published releases (tests tamper with it)."""
    return Path(shutil.copytree(published, tmp_path / "releases"))


def config_for(url: str, lab: TrustLab, identity: str = TEST_IDENTITY, issuer: str = TEST_ISSUER) -> str:
    return (
        f'update_release_url = "{url}"\n'
        f'update_identity = "{identity}"\n'
        f'update_issuer = "{issuer}"\n'
        f'sigstore_trusted_root = "{lab.trusted_root}"\n'
    )


@pytest.fixture
def updater_env(tmp_path: Path, releases: Path, trust_lab: TrustLab) -> dict[str, str]:
    """An isolated environment whose config points ``banger update`` at this test's releases and lab."""
    return isolated_env(tmp_path / "env", config=config_for(releases.as_uri(), trust_lab))


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``banger system install --root R --venv`` of the tiny v0.1.0 banger: what a packager renders."""
    wheels = tmp_path_factory.mktemp("wheels-v0.1.0")
    banger_wheel(wheels, VERSIONS[0])
    root = tmp_path_factory.mktemp("rendered")
    env = isolated_env(tmp_path_factory.mktemp("render-env"))
    args = ["system", "install", "--owner", OWNER, "--root", str(root), "--wheels", str(wheels), "--venv"]
    result = invoke_cli(args, env)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def installed(rendered: Path, tmp_path: Path) -> Path:
    """This test's copy of the rendered install (links kept as links)."""
    return Path(shutil.copytree(rendered, tmp_path / "root", symlinks=True))
