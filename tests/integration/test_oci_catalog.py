"""Sharing images through a registry with the catalog: pinned oci:// entries, publish_catalog.py --registry,
and ``catalog_url = "oci://..."`` (the catalog itself stored in the registry, read through ``ctx.fetch_document``).

Cross-plugin (catalog + oci + the fake test plugin), against docker-registry on 127.0.0.1 and a real daemon.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from banger_catalog.catalog import (
    CATALOG_ARTIFACT_TYPE,
    CATALOG_LIMIT,
    CATALOG_MEDIA_TYPE,
    load_catalog,
    parse_catalog,
)
from banger_catalog.errors import CatalogError
from banger_core.common.bundles import BundleInfo, write_bundle
from banger_core.daemon.runtime import Runtime
from banger_core.testing import RecordingProgress, invoke_cli
from banger_hookspecs import SourceUnavailable
from banger_oci.push import publish_bundle, publish_document
from plugins.oci.tests.registry_lab import Registry, file_sha256, free_port
from tests.support.daemon import DaemonHarness

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


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


# -- catalog_url = "oci://...": the catalog itself stored in the registry ----------------------------------------


def publish_with_script(registry: Registry, catalog: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run publish_catalog.py --registry; returns the run and the ``catalog_url`` value it printed."""
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/publish_catalog.py"),
            "--catalog",
            str(catalog),
            "--registry",
            f"{registry.host}/team",
            "--tag",
            "v1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    last = run.stdout.splitlines()[-1]
    prefix = 'pushed the catalog: catalog_url = "'
    assert last.startswith(prefix) and last.endswith('"'), run.stdout
    return run, last.removeprefix(prefix).removesuffix('"')


def set_catalog_url(daemon: DaemonHarness, catalog_url: str) -> None:
    """Make ``catalog_url`` the only catalog the daemon knows; a plugin key needs a daemon restart."""
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(config.read_text() + f'catalog_url = "{catalog_url}"\n')
    daemon.stop()


def test_a_daemon_given_only_a_pinned_oci_catalog_lists_and_pulls_its_images(
    daemon: DaemonHarness, registry: Registry, tmp_path: Path
) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    image_sha = client.images.get("fake-tiny").sha256
    bundles = [
        write_bundle(
            "image", daemon.state / "images" / "fake-tiny", tmp_path / "fake-tiny.tar.zst", RecordingProgress()
        ),
        write_bundle("kernel", daemon.state / "kernels" / "fake-kernel", tmp_path / "k.tar.zst", RecordingProgress()),
    ]
    catalog = tmp_path / "catalog.json"
    described = ["--description", "fake-tiny=the team image", "--description", "fake-kernel=its kernel"]
    run, catalog_url = publish_with_script(registry, catalog, *described, *(str(b.path) for b in bundles))
    client.images.delete("fake-tiny")
    client.kernels.delete("fake-kernel")

    digest = httpx.head(
        f"http://{registry.host}/v2/team/banger-catalog/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).headers["docker-content-digest"]
    assert catalog_url == f"oci://{registry.host}/team/banger-catalog@{digest}"
    assert run.stdout.splitlines()[-2] == f"wrote {catalog}"
    stored = httpx.get(
        f"http://{registry.host}/v2/team/banger-catalog/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    assert stored["artifactType"] == "application/vnd.banger.catalog.v1"
    [layer] = stored["layers"]
    assert layer["mediaType"] == "application/vnd.banger.catalog.v1+json"
    assert registry.blob_file(layer["digest"]).read_bytes() == catalog.read_bytes()  # what was written locally

    set_catalog_url(daemon, catalog_url)
    listed = cli_ok(["image", "list", "--available"], daemon.env)  # starts the daemon
    kernel_lines = cli_ok(["kernel", "pull", "fake-kernel", "--provider", "catalog"], daemon.env)
    image_lines = cli_ok(["image", "pull", "fake-tiny", "--source", "catalog"], daemon.env)

    offered = [(i.name, i.description) for i in daemon.client().images.available() if i.source == "catalog"]
    assert offered == [("fake-tiny", "the team image")]
    assert any("fake-tiny" in line and "catalog" in line for line in listed), listed
    assert any(line.startswith("==> kernel provider catalog: fake-kernel is published at ") for line in kernel_lines)
    assert any(line.startswith("==> image source catalog: fake-tiny is published at ") for line in image_lines)
    pulled = daemon.client().images.get("fake-tiny")
    assert pulled.sha256 == image_sha and file_sha256(Path(pulled.path)) == image_sha
    assert str(pulled.meta["origin"]).startswith(f"{registry.host}/team/fake-tiny@sha256:")


def test_a_tampered_catalog_blob_is_refused_in_one_line(
    daemon: DaemonHarness, registry: Registry, bundle: BundleInfo, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.json"
    _, catalog_url = publish_with_script(registry, catalog, "--description", "golden=the team image", str(bundle.path))
    digest = "sha256:" + hashlib.sha256(catalog.read_bytes()).hexdigest()
    stored = registry.blob_file(digest)
    data = bytearray(stored.read_bytes())
    data[data.index(b"golden")] = ord("G")  # same size, still JSON: only the digest can tell
    stored.write_bytes(bytes(data))
    set_catalog_url(daemon, catalog_url)

    error = one_error_line(["image", "pull", "golden", "--source", "catalog"], daemon.env)

    reference = catalog_url.removeprefix("oci://")
    assert error == (
        f"banger: error: image source catalog failed to get golden: CatalogError: catalog {catalog_url} is not a "
        f"banger catalog: {reference}: layer {digest[:19]} does not match its digest {digest}: refused"
    )
    assert [item.name for item in daemon.client().images.available() if item.source == "catalog"] == []
    assert daemon.client().images.list() == []


# -- the seam: ctx.fetch_document of a real Runtime, routed to the oci publisher, against the registry ------------


@pytest.fixture
def runtime(banger_env: dict[str, str]) -> Runtime:
    return Runtime(banger_env)


def push_catalog(registry: Registry, data: bytes, repo: str = "team/banger-catalog") -> str:
    """Push ``data`` as a catalog artifact under ``:v1``; returns the pinned ``REG/REPO@sha256:...``."""
    published = publish_document(
        data, CATALOG_ARTIFACT_TYPE, CATALOG_MEDIA_TYPE, f"{registry.host}/{repo}:v1", None, RecordingProgress()
    )
    return published.reference


TEAM_CATALOG = json.dumps(
    {
        "format": 1,
        "entries": [
            {
                "name": "golden",
                "kind": "image",
                "description": "the team image",
                "url": "https://example.invalid/golden.tar.zst",
                "sha256": "ab" * 32,
                "size": 10,
            }
        ],
    }
).encode()


def test_a_catalog_loads_through_the_runtime_by_digest_or_by_tag(registry: Registry, runtime: Runtime) -> None:
    pinned = push_catalog(registry, TEAM_CATALOG)

    by_digest = load_catalog(f"oci://{pinned}", fetch_document=runtime.ctx.fetch_document)
    by_tag = load_catalog(f"oci://{registry.host}/team/banger-catalog:v1", fetch_document=runtime.ctx.fetch_document)

    assert [e.name for e in by_digest.entries] == [e.name for e in by_tag.entries] == ["golden"]
    assert by_digest.location == by_tag.location == f"catalog oci://{pinned}"  # a tag is reported pinned


def test_an_image_artifact_is_not_a_catalog(registry: Registry, runtime: Runtime, bundle: BundleInfo) -> None:
    image = publish_bundle(bundle.path, bundle.manifest, f"{registry.host}/team/golden:v1", None, RecordingProgress())

    with pytest.raises(CatalogError) as refused:
        load_catalog(f"oci://{image.reference}", fetch_document=runtime.ctx.fetch_document)

    assert str(refused.value) == (
        f"catalog oci://{image.reference} is not a banger catalog: {image.reference} is a "
        "application/vnd.banger.image.v1 artifact, not a application/vnd.banger.catalog.v1 one: check the reference"
    )


def test_a_catalog_over_the_size_cap_is_refused_before_it_is_downloaded(registry: Registry, runtime: Runtime) -> None:
    pinned = push_catalog(registry, b" " * (CATALOG_LIMIT + 1))

    with pytest.raises(CatalogError) as refused:
        load_catalog(f"oci://{pinned}", fetch_document=runtime.ctx.fetch_document)

    assert str(refused.value).endswith(
        f"{pinned}: its layer is {CATALOG_LIMIT + 1} bytes, more than the {CATALOG_LIMIT} allowed: refused"
    )


def test_an_unreachable_registry_is_one_sentence_and_may_be_retried(runtime: Runtime) -> None:
    url = f"oci://127.0.0.1:{free_port()}/team/banger-catalog:v1"

    with pytest.raises(SourceUnavailable) as unreachable:
        load_catalog(url, fetch_document=runtime.ctx.fetch_document)

    assert str(unreachable.value).startswith(f"catalog {url} cannot be loaded: registry 127.0.0.1:")
    assert "is unreachable: " in str(unreachable.value) and "\n" not in str(unreachable.value)


def test_a_reference_no_publisher_claims_is_unavailable(runtime: Runtime) -> None:
    with pytest.raises(SourceUnavailable, match=r"no artifact publisher understands 'not a reference'"):
        runtime.ctx.fetch_document(
            "not a reference", artifact_type=CATALOG_ARTIFACT_TYPE, media_type=CATALOG_MEDIA_TYPE, max_size=10
        )
