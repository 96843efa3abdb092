"""Sharing images through a registry with the catalog: pinned oci:// entries, and publish_catalog.py --registry.

Cross-plugin (catalog + oci + the fake test plugin), against docker-registry on 127.0.0.1 and a real daemon.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from banger_catalog.catalog import parse_catalog
from banger_core.common.bundles import BundleInfo, write_bundle
from banger_core.testing import RecordingProgress, invoke_cli
from plugins.oci.tests.registry_lab import Registry
from tests.support.daemon import DaemonHarness

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path / "registry")
    try:
        yield server
    finally:
        server.stop()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli_ok(args: list[str], env: dict[str, str]) -> list[str]:
    result = invoke_cli(args, env)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def one_error_line(args: list[str], env: dict[str, str]) -> str:
    result = invoke_cli(args, env)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("banger: error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def use_catalog(daemon: DaemonHarness, tmp_path: Path, *entries: dict[str, object]) -> None:
    """Point ``catalog_url`` at a catalog of ``entries``; a plugin key needs a daemon restart."""
    catalog = tmp_path / "team-catalog.json"
    catalog.write_text(json.dumps({"format": 1, "entries": list(entries)}))
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(config.read_text() + f'catalog_url = "{catalog}"\n')
    daemon.stop()


def test_a_team_catalog_serves_pushed_artifacts_pinned_by_digest(
    daemon: DaemonHarness, registry: Registry, tmp_path: Path
) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    image_sha = client.images.get("fake-tiny").sha256
    [kernel] = client.kernels.list()
    kernel_files = {name: file_sha256(Path(kernel.path) / name) for name in ("vmlinux", "initrd")}
    image = client.images.push("fake-tiny", f"{registry.host}/team/golden:v1")
    pushed_kernel = client.kernels.push("fake-kernel", f"{registry.host}/team/kernel:v1")
    client.images.delete("fake-tiny")
    client.kernels.delete("fake-kernel")
    use_catalog(
        daemon,
        tmp_path,
        {"name": "fake-tiny", "kind": "image", "url": f"oci://{image.reference}", "kernel_ref": "fake-kernel"},
        {"name": "fake-kernel", "kind": "kernel", "url": f"oci://{pushed_kernel.reference}"},
    )
    client = daemon.client()

    kernel_lines = cli_ok(["kernel", "pull", "fake-kernel", "--provider", "catalog"], daemon.env)
    image_lines = cli_ok(["image", "pull", "fake-tiny", "--source", "catalog"], daemon.env)

    assert f"==> kernel provider catalog: fake-kernel is published at {pushed_kernel.reference}" in kernel_lines
    assert f"==> image source catalog: fake-tiny is published at {image.reference}" in image_lines
    pulled = client.images.get("fake-tiny")
    assert pulled.sha256 == image_sha and file_sha256(Path(pulled.path)) == image_sha
    assert pulled.meta["origin"] == image.reference
    [back] = client.kernels.list()
    assert back.sha256 == kernel_files and back.meta["origin"] == pushed_kernel.reference


def test_a_catalog_entry_whose_artifact_holds_another_image_stores_nothing(
    daemon: DaemonHarness, registry: Registry, tmp_path: Path
) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    image = client.images.push("fake-tiny", f"{registry.host}/team/golden:v1")
    use_catalog(daemon, tmp_path, {"name": "golden", "kind": "image", "url": f"oci://{image.reference}"})

    error = one_error_line(["image", "pull", "golden", "--source", "catalog"], daemon.env)

    assert error == (
        f"banger: error: image source catalog lists image 'golden' at {image.reference}, but that artifact holds "
        f"image 'fake-tiny': nothing was stored, fix the entry (or pull {image.reference} itself)"
    )
    assert [i.name for i in daemon.client().images.list()] == ["fake-tiny"]
    assert sorted(entry.name for entry in (daemon.state / "images").iterdir()) == ["fake-tiny"]


@pytest.fixture
def bundle(tmp_path: Path) -> BundleInfo:
    source = tmp_path / "golden"
    source.mkdir()
    (source / "rootfs.ext4").write_bytes(b"\x53\xef" * 50_000)
    (source / "manifest.json").write_text(json.dumps({"name": "golden", "version": "7", "kernel_ref": "generic-6.1"}))
    return write_bundle("image", source, tmp_path / "golden.tar.zst", RecordingProgress())


def test_publish_catalog_pushes_to_a_registry_and_pins_the_entry(
    registry: Registry, bundle: BundleInfo, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.json"
    script = [sys.executable, str(REPO / "scripts/publish_catalog.py"), "--catalog", str(catalog)]
    target = ["--registry", f"{registry.host}/team", "--tag", "v7", "--description", "golden=the team image"]

    run = subprocess.run([*script, *target, str(bundle.path)], capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stderr
    [entry] = json.loads(catalog.read_text())["entries"]
    digest = httpx.head(
        f"http://{registry.host}/v2/team/golden/manifests/v7",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).headers["docker-content-digest"]
    assert entry == {
        "name": "golden",
        "kind": "image",
        "description": "the team image",
        "url": f"oci://{registry.host}/team/golden@{digest}",
        "kernel_ref": "generic-6.1",
    }
    assert run.stdout.splitlines()[0] == f"added image golden: oci://{registry.host}/team/golden@{digest}"
    assert parse_catalog(catalog.read_bytes(), "test", base=None).entries[0].published

    missing_tag = subprocess.run(
        [*script, "--registry", registry.host, str(bundle.path)], capture_output=True, text=True
    )
    assert missing_tag.returncode == 2 and "--registry needs --tag TAG" in missing_tag.stderr
