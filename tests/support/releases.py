"""Test releases cut with scripts/release, as CI cuts them, but offline once a dependency cache is filled.

The first cut on a machine resolves the dependencies from pip's index and keeps
their wheels under ``$BANGER_TEST_CACHE`` (keyed by every pyproject.toml and the
Python); later cuts take them from there with ``--no-index``. banger's own
distributions are built every time (``--no-build-isolation``: hatchling from
the test venv), so a release always holds the checkout as it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from banger_core.testing.sigstore_lab import TrustLab

REPO = Path(__file__).resolve().parents[2]
RELEASE_SCRIPT = REPO / "scripts" / "release"
FAKE_PLUGIN = REPO / "tests" / "support" / "dists" / "fake-testplugin"
FAILDOCTOR_PLUGIN = REPO / "tests" / "support" / "dists" / "faildoctor-testplugin"
RELEASE_TIMEOUT = 900


def dependency_cache() -> Path:
    """Where the releases' dependency wheels are kept between runs: keyed by every pyproject.toml and the Python."""
    digest = hashlib.sha256(f"{sys.version_info[:2]} {sys.platform}".encode())
    projects = [REPO, REPO / "hookspecs", *(p.parent for p in REPO.glob("plugins/*/pyproject.toml"))]
    for project in sorted([*projects, FAKE_PLUGIN, FAILDOCTOR_PLUGIN]):
        digest.update(str(project.relative_to(REPO)).encode() + b"\0" + (project / "pyproject.toml").read_bytes())
    cache = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache"))
    return cache / f"release-deps-{digest.hexdigest()[:16]}"


def run_release(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``scripts/release ARGS`` with the test's Python."""
    return subprocess.run(
        [sys.executable, str(RELEASE_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=RELEASE_TIMEOUT,
        env=env,
    )


class Releases:
    """Releases cut with scripts/release into one release root, each manifest signed by ``lab`` when given."""

    def __init__(self, root: Path, lab: TrustLab | None) -> None:
        self.root = root
        self.lab = lab
        self.deps = dependency_cache()

    def cut(self, version: str, *extra_dists: Path, env: dict[str, str] | None = None) -> Path:
        args = ["--version", version, "--out", str(self.root), "--sign-with", "none"]
        args += ["--allow-dirty", "--no-build-isolation"]  # a developer's tree; hatchling from this venv
        for dist in extra_dists:
            args += ["--extra-dist", str(dist)]
        cached = self.deps.is_dir()
        if cached:
            args += ["--find-links", str(self.deps), "--no-index"]
        done = run_release(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"released {version} (commit "), done.stdout
        release = self.root / version
        if self.lab is not None:
            self.lab.sign_file(release / "manifest.json")
        if not cached:
            self._keep_dependencies(release / f"banger-{version}-wheelhouse.tar")
        return release

    def _keep_dependencies(self, tar_path: Path) -> None:
        """The wheelhouse's non-banger wheels into the cache (renamed in whole: never half there)."""
        self.deps.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.deps.name}.", dir=self.deps.parent))
        try:
            extract_wheels(tar_path, scratch, keep=lambda name: not name.startswith("banger"))
            try:
                scratch.rename(self.deps)
            except OSError:  # another run filled it first
                pass
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # gone already when the rename took it


def extract_wheels(tar_path: Path, dest: Path, keep: Callable[[str], bool] = lambda name: True) -> list[str]:
    """The top-level ``*.whl`` files of a release's wheelhouse tar into ``dest``; their names.

    By hand rather than ``extractall(filter="data")``: Debian 12's Python (3.11.2) predates that argument.
    """
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            assert member.isfile() and "/" not in member.name and member.name.endswith(".whl"), member.name
            if not keep(member.name):
                continue
            source = tar.extractfile(member)
            assert source is not None
            (dest / member.name).write_bytes(source.read())
            names.append(member.name)
    return names
