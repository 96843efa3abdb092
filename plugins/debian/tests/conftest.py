"""Fixtures for banger-debian's tests: the real Debian kernel package, cached across runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from banger_debian.apt import kernel_dependency, parse_show

METAPACKAGE = "linux-image-cloud-amd64"


def _test_cache() -> Path:
    path = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def kernel_deb() -> Path:
    """The real kernel package behind linux-image-cloud-amd64, downloaded once into $BANGER_TEST_CACHE/debs."""
    if not shutil.which("apt-get"):
        pytest.skip("apt-get is missing: the kernel package tests need a Debian host")
    show = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", METAPACKAGE], capture_output=True, text=True, check=False
    )
    meta = parse_show(show.stdout)
    if meta is None:
        pytest.skip(f"apt does not know {METAPACKAGE}: run apt-get update")
    package, version = kernel_dependency(meta)
    debs = _test_cache() / "debs"
    debs.mkdir(exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    scratch = debs / f".download-{os.getpid()}"
    scratch.mkdir(mode=0o755, exist_ok=True)
    try:
        subprocess.run(
            ["apt-get", "download", f"{package}={version}" if version else package],
            cwd=scratch,
            check=True,
            capture_output=True,
        )
        (deb,) = scratch.glob("*.deb")
        target = debs / deb.name
        os.replace(deb, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def kernel_tree(kernel_deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kernel package unpacked (dpkg-deb -x) with modules.dep generated (depmod -b)."""
    tree = tmp_path_factory.mktemp("kernel-tree")
    subprocess.run(["dpkg-deb", "-x", str(kernel_deb), str(tree)], check=True)
    (release,) = [p.name.removeprefix("vmlinuz-") for p in (tree / "boot").glob("vmlinuz-*")]
    subprocess.run(["/usr/sbin/depmod", "-b", str(tree), release], check=True)
    return tree
