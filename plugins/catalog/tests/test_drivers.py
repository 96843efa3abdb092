"""The registered drivers against local catalogs (HTTP is in tests/integration/test_catalog_http.py)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from banger_catalog import plugin
from banger_catalog.drivers import CatalogImageSource, CatalogKernelProvider
from banger_catalog.errors import BundleError, CatalogError
from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import ImageListing, PluginContext, PublishedElsewhere, SourceUnavailable
from plugins.catalog.tests.entries import catalog_entry

pytestmark = pytest.mark.unit


def _context(banger_env: dict[str, str], tmp_path: Path, *entries: dict[str, Any]) -> PluginContext:
    """A local catalog of unsigned ``entries``, opted out of signature checks (those are in test_signatures.py)."""
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"format": 1, "entries": list(entries)}))
    return make_plugin_context(banger_env, {"catalog_url": str(catalog), "catalog_allow_unsigned": [str(catalog)]})


def test_registrations_are_named_catalog_and_tried_first() -> None:
    (source,) = plugin.banger_image_sources()
    (provider,) = plugin.banger_kernel_providers()
    assert (source.name, provider.name) == ("catalog", "catalog")
    assert source.priority < 50 and provider.priority < 50


def test_registered_factories_build_the_drivers(plugin_context: PluginContext) -> None:
    (source,) = plugin.banger_image_sources()
    (provider,) = plugin.banger_kernel_providers()
    assert isinstance(source.factory(plugin_context), CatalogImageSource)
    assert isinstance(provider.factory(plugin_context), CatalogKernelProvider)


def test_plugin_manager_selects_catalog(plugin_manager: Any) -> None:
    assert "catalog" in plugin_manager.image_sources()
    assert "catalog" in plugin_manager.kernel_providers()


def test_embedded_catalog_claims_the_defaults_but_cannot_serve_them(
    plugin_context: PluginContext, tmp_path: Path
) -> None:
    source = CatalogImageSource(plugin_context)
    kernels = CatalogKernelProvider(plugin_context)
    assert source.claims("debian-bookworm") and kernels.claims("generic-6.1")
    assert not source.claims("generic-6.1") and not kernels.claims("debian-bookworm")
    assert not source.claims("docker.io/library/alpine:3.20")
    assert source.available() == []  # nothing is published yet
    for driver, ref in ((source, "debian-bookworm"), (kernels, "generic-6.1")):
        with pytest.raises(SourceUnavailable, match="not published yet"):
            driver.pull(ref, tmp_path / ref, RecordingProgress())


def test_image_pull_from_a_local_catalog(banger_env: dict[str, str], craft: Any, tmp_path: Path) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    ctx = _context(banger_env, tmp_path, catalog_entry(bundle, "image", "test-image"))
    source = CatalogImageSource(ctx)
    assert source.claims("test-image") and not source.claims("other")
    assert source.available() == [ImageListing(name="test-image", description="test image", source="catalog")]
    dest = tmp_path / "dest"
    dest.mkdir()
    artifact = source.pull("test-image", dest, RecordingProgress())
    rootfs = craft.image_files["rootfs.ext4"]
    assert artifact.rootfs == dest / "rootfs.ext4" and artifact.rootfs.read_bytes() == rootfs
    assert (artifact.name, artifact.kernel_ref, artifact.version) == ("test-image", "generic-6.1", "2025.1")
    assert (artifact.sha256, artifact.size) == (hashlib.sha256(rootfs).hexdigest(), len(rootfs))
    assert artifact.metadata["origin"] == bundle.as_uri()
    assert artifact.metadata["recipe"] == "test"
    assert bundle.exists(), "a local bundle is read in place, never deleted"


def test_kernel_pull_from_a_local_catalog(banger_env: dict[str, str], craft: Any, tmp_path: Path) -> None:
    bundle = craft.good("kernel", name="k.tar.zst")
    ctx = _context(banger_env, tmp_path, catalog_entry(bundle, "kernel", "generic-6.1"))
    dest = tmp_path / "dest"
    dest.mkdir()
    artifact = CatalogKernelProvider(ctx).pull("generic-6.1", dest, RecordingProgress())
    assert artifact.vmlinux.read_bytes() == craft.kernel_files["vmlinux"]
    assert artifact.initrd.read_bytes() == craft.kernel_files["initrd"]
    assert (artifact.ref, artifact.boot_protocol) == ("generic-6.1", 1)
    assert artifact.sha256 == {n: hashlib.sha256(d).hexdigest() for n, d in craft.kernel_files.items()}


def test_unknown_name_is_unavailable(banger_env: dict[str, str], craft: Any, tmp_path: Path) -> None:
    bundle = craft.good("image")
    ctx = _context(banger_env, tmp_path, catalog_entry(bundle, "image", "test-image"))
    with pytest.raises(SourceUnavailable, match="lists no image named 'other'"):
        CatalogImageSource(ctx).pull("other", tmp_path / "dest", RecordingProgress())


def test_bundle_for_another_image_is_rejected(banger_env: dict[str, str], craft: Any, tmp_path: Path) -> None:
    bundle = craft.good("image")  # its manifest says test-image
    ctx = _context(banger_env, tmp_path, catalog_entry(bundle, "image", "debian-bookworm"))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleError, match="not what the catalog lists"):
        CatalogImageSource(ctx).pull("debian-bookworm", dest, RecordingProgress())
    assert list(dest.iterdir()) == []


def test_bundle_with_another_kernel_ref_is_rejected(banger_env: dict[str, str], craft: Any, tmp_path: Path) -> None:
    bundle = craft.good("image")
    ctx = _context(banger_env, tmp_path, catalog_entry(bundle, "image", "test-image", kernel_ref="generic-6.6"))
    with pytest.raises(BundleError, match="not what the catalog lists"):
        CatalogImageSource(ctx).pull("test-image", tmp_path / "dest", RecordingProgress())


def test_local_bundle_with_wrong_digest_is_rejected_and_kept(
    banger_env: dict[str, str], craft: Any, tmp_path: Path
) -> None:
    bundle = craft.good("image")
    ctx = _context(banger_env, tmp_path, catalog_entry(bundle, "image", "test-image", sha256="00" * 32))
    with pytest.raises(BundleError, match="does not match the catalog"):
        CatalogImageSource(ctx).pull("test-image", tmp_path / "dest", RecordingProgress())
    assert bundle.exists(), "the user's own file is never deleted"


def test_missing_local_bundle_is_unavailable(banger_env: dict[str, str], craft: Any, tmp_path: Path) -> None:
    bundle = craft.good("image")
    entry = catalog_entry(bundle, "image", "test-image", url="gone.tar.zst")
    ctx = _context(banger_env, tmp_path, entry)
    with pytest.raises(SourceUnavailable, match="does not exist"):
        CatalogImageSource(ctx).pull("test-image", tmp_path / "dest", RecordingProgress())


def test_unreadable_catalog_claims_plain_names_and_explains_on_pull(
    banger_env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_plugin_context(banger_env, {"catalog_url": str(tmp_path / "missing.json")})
    source = CatalogImageSource(ctx)
    assert source.claims("debian-bookworm")
    assert not source.claims("docker.io/library/alpine:3.20")
    with caplog.at_level(logging.WARNING):
        assert source.available() == []
    assert "cannot list images" in caplog.text
    with pytest.raises(SourceUnavailable, match="cannot be read"):
        source.pull("debian-bookworm", tmp_path / "dest", RecordingProgress())


def test_malformed_catalog_fails_the_pull(banger_env: dict[str, str], tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text("<html>")
    ctx = make_plugin_context(banger_env, {"catalog_url": str(catalog)})
    with pytest.raises(CatalogError, match="not valid JSON"):
        CatalogImageSource(ctx).pull("debian-bookworm", tmp_path / "dest", RecordingProgress())


def test_an_entry_naming_an_oci_artifact_sends_the_pull_there(banger_env: dict[str, str], tmp_path: Path) -> None:
    image_ref = f"127.0.0.1:5000/team/golden@sha256:{'d' * 64}"
    kernel_ref = f"127.0.0.1:5000/team/kernel:6.1@sha256:{'e' * 64}"
    oci = {"sha256": None, "size": None, "description": "from the team registry"}
    ctx = _context(
        banger_env,
        tmp_path,
        {"name": "golden", "kind": "image", "url": f"oci://{image_ref}", **oci},
        {"name": "generic-6.1", "kind": "kernel", "url": f"oci://{kernel_ref}", **oci},
    )
    source, kernels = CatalogImageSource(ctx), CatalogKernelProvider(ctx)
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(PublishedElsewhere) as image:
        source.pull("golden", dest, RecordingProgress())
    with pytest.raises(PublishedElsewhere) as kernel:
        kernels.pull("generic-6.1", dest, RecordingProgress())

    assert (image.value.target, kernel.value.target) == (image_ref, kernel_ref)
    assert list(dest.iterdir()) == [], "nothing downloaded: the oci provider does that"
    assert [i.name for i in source.available()] == ["golden"]
