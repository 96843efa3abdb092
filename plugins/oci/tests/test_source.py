"""The ``oci`` image source as the core sees it: registration, claims, and pull() against a real registry.

The flattener (banger_oci.ext4.build_rootfs) comes from another branch; here a
stand-in at that boundary records exactly what the source hands over and checks
each layer against its diff_id, so these tests cover the registry side only.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import PluginContext, Progress
from banger_oci import plugin
from banger_oci.blobs import BlobError
from banger_oci.source import OciImageSource
from plugins.oci.tests.registry_lab import ImageSpec, LayerBlob, Registry, TokenServer, make_layer, write_layout


@dataclass(frozen=True)
class StandInLayer:
    path: Path
    media_type: str
    diff_id: str


class StandInFlattener:
    """Takes the place of banger_oci.ext4 / banger_oci.layers (the interface in the shared plan)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[StandInLayer], Path, bool]] = []

    def build_rootfs(
        self,
        layers: Sequence[StandInLayer],
        image: Path,
        progress: Progress,
        *,
        min_free: int = 256 << 20,
        with_sshd: bool = False,
    ) -> int:
        for layer in layers:
            data = layer.path.read_bytes()
            if layer.media_type.endswith("gzip"):
                data = gzip.decompress(data)
            elif layer.media_type.endswith("zstd"):
                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.diff_id
        self.calls.append((list(layers), image, with_sshd))
        image.write_bytes(b"stand-in ext4 " * 100)
        return image.stat().st_size


@pytest.fixture
def flattener(monkeypatch: pytest.MonkeyPatch) -> StandInFlattener:
    stand_in = StandInFlattener()
    ext4 = types.ModuleType("banger_oci.ext4")
    ext4.build_rootfs = stand_in.build_rootfs  # type: ignore[attr-defined]
    layers = types.ModuleType("banger_oci.layers")
    layers.Layer = StandInLayer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "banger_oci.ext4", ext4)
    monkeypatch.setitem(sys.modules, "banger_oci.layers", layers)
    return stand_in


def layers() -> list[LayerBlob]:
    return [
        make_layer({"etc/os-release": b"ID=test\n"}, "gzip"),
        make_layer({"etc/zstd": b"z\n" * 1000}, "zstd"),
        make_layer({"srv/plain": b"p\n"}, "tar"),
    ]


@pytest.mark.unit
def test_registration_and_config_keys(banger_env: dict[str, str]) -> None:
    (source,) = plugin.banger_image_sources()
    assert (source.name, source.priority) == ("oci", 30)
    ctx = make_plugin_context(banger_env)
    assert isinstance(source.factory(ctx), OciImageSource)
    assert ctx.config["oci_cache_max"] == 10 << 30
    assert ctx.config["oci_kernel_ref"] == "generic-6.1"
    assert ctx.config.get("oci_auth_file") is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("ref", "claimed"),
    [("alpine:3.20", True), ("docker.io/library/alpine", True), ("debian-bookworm", False), ("alpine", False)],
)
def test_the_registered_source_claims_references_only(
    plugin_manager: Any, plugin_context: PluginContext, ref: str, claimed: bool
) -> None:
    assert plugin_manager.image_sources()["oci"].value.factory(plugin_context).claims(ref) is claimed


@pytest.mark.unit
@pytest.mark.parametrize(
    ("ref", "claimed_by"),
    [
        ("debian-bookworm", {"catalog", "debootstrap"}),
        ("alpine:3.20", {"oci"}),
        ("docker.io/library/alpine", {"oci"}),
        ("127.0.0.1:5000/team/base@sha256:" + "0" * 64, {"oci"}),
    ],
)
def test_oci_and_the_builtin_sources_never_claim_the_same_ref(
    plugin_manager: Any, plugin_context: PluginContext, ref: str, claimed_by: set[str]
) -> None:
    sources = plugin_manager.image_sources()
    claimers = {name for name in sources if sources[name].value.factory(plugin_context).claims(ref)}
    assert claimers == claimed_by & set(sources), "tox -e plugin-oci installs oci alone; the full venv has all"


@pytest.mark.integration
def test_pull_an_index_by_tag(
    registry: Registry, flattener: StandInFlattener, banger_env: dict[str, str], tmp_path: Path
) -> None:
    amd = ImageSpec(layers())
    layout = write_layout(
        tmp_path / "layout", "3.20", [ImageSpec([make_layer({"a": b"a"})], "arm64"), amd], as_index=True
    )
    ref = registry.push(layout, "library/demo", all_images=True)
    ctx = make_plugin_context(banger_env, {"oci_kernel_ref": "generic-6.6"})
    source = OciImageSource(ctx)
    dest = tmp_path / "dest"
    dest.mkdir()
    progress = RecordingProgress()

    artifact = source.pull(ref, dest, progress)

    manifest_digest = layout.manifests["amd64"]
    assert (artifact.name, artifact.version, artifact.kernel_ref) == ("demo-3.20", manifest_digest[:19], "generic-6.6")
    assert artifact.rootfs == dest / "rootfs.ext4"
    assert artifact.sha256 == hashlib.sha256(artifact.rootfs.read_bytes()).hexdigest()
    assert artifact.size == artifact.rootfs.stat().st_size
    assert artifact.metadata["origin"] == ref and artifact.metadata["reference"] == ref
    assert artifact.metadata["manifest_digest"] == manifest_digest
    assert artifact.metadata["index_digest"] == layout.index_digest
    assert artifact.metadata["layers"] == [layer.digest for layer in amd.layers]
    json.dumps(dict(artifact.metadata))  # the core stores it as JSON

    ((handed, image, with_sshd),) = flattener.calls
    assert image == dest / "rootfs.ext4"
    assert with_sshd is False and "with_sshd" not in artifact.metadata
    assert [(layer.media_type, layer.diff_id) for layer in handed] == [(b.media_type, b.diff_id) for b in amd.layers]
    assert [layer.path.read_bytes() for layer in handed] == [b.data for b in amd.layers]
    assert [layer.path for layer in handed] == [source.cache.path(b.digest) for b in amd.layers]
    for blob in amd.layers:  # progress in bytes: each layer ends at its full size
        assert (len(blob.data), len(blob.data), "B") in progress.advances


@pytest.mark.integration
def test_pull_with_sshd_asks_the_flattener_for_it_and_records_it(
    registry: Registry, flattener: StandInFlattener, banger_env: dict[str, str], tmp_path: Path
) -> None:
    ref = registry.push(write_layout(tmp_path / "layout", "v1", [ImageSpec(layers())]), "team/base")
    dest = tmp_path / "dest"
    dest.mkdir()
    artifact = OciImageSource(make_plugin_context(banger_env)).pull_with_sshd(ref, dest, RecordingProgress())
    assert [with_sshd for _, _, with_sshd in flattener.calls] == [True]
    assert artifact.metadata["with_sshd"] is True


@pytest.mark.integration
def test_pull_by_digest_without_a_tag(
    registry: Registry, flattener: StandInFlattener, banger_env: dict[str, str], tmp_path: Path
) -> None:
    layout = write_layout(tmp_path / "layout", "v1", [ImageSpec(layers())])
    registry.push(layout, "team/base")
    ref = f"{registry.host}/team/base@{layout.manifests['amd64']}"
    dest = tmp_path / "dest"
    dest.mkdir()
    artifact = OciImageSource(make_plugin_context(banger_env)).pull(ref, dest, RecordingProgress())
    assert artifact.name == f"base-{layout.manifests['amd64'][7:19]}"
    assert artifact.kernel_ref == "generic-6.1"
    assert artifact.metadata["manifest_digest"] == layout.manifests["amd64"]
    assert artifact.metadata["index_digest"] is None


@pytest.mark.integration
def test_credentials_come_from_the_configured_auth_file(
    flattener: StandInFlattener, banger_env: dict[str, str], tmp_path: Path
) -> None:
    tokens = TokenServer(tmp_path, "tester", "right-pass")
    try:
        registry = Registry(tmp_path / "registry", tokens.registry_auth_yaml())
        try:
            layout = write_layout(tmp_path / "layout", "v1", [ImageSpec(layers())])
            ref = registry.push(layout, "team/secure", creds="tester:right-pass")
            auth_file = tmp_path / "auth.json"
            auth_file.write_text(
                json.dumps({"auths": {registry.host: {"username": "tester", "password": "right-pass"}}})
            )
            ctx = make_plugin_context(banger_env, {"oci_auth_file": auth_file})
            dest = tmp_path / "dest"
            dest.mkdir()
            artifact = OciImageSource(ctx).pull(ref, dest, RecordingProgress())
            assert artifact.metadata["manifest_digest"] == layout.manifests["amd64"]
        finally:
            registry.stop()
    finally:
        tokens.stop()


@pytest.mark.integration
def test_a_tampered_layer_fails_the_pull_before_the_flattener(
    registry: Registry, flattener: StandInFlattener, banger_env: dict[str, str], tmp_path: Path
) -> None:
    amd = ImageSpec(layers())
    ref = registry.push(write_layout(tmp_path / "layout", "v1", [amd]), "team/base")
    stored = registry.blob_file(amd.layers[1].digest)
    stored.write_bytes(stored.read_bytes()[:-1] + b"\0")
    source = OciImageSource(make_plugin_context(banger_env))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BlobError, match=r"^layer 2/3 sha256:[0-9a-f]{12}: the registry sent content with digest"):
        source.pull(ref, dest, RecordingProgress())
    assert flattener.calls == []
    assert list(dest.iterdir()) == []
    assert not source.cache.path(amd.layers[1].digest).exists()
    assert not source.cache.partial_path(amd.layers[1].digest).exists()


@pytest.mark.integration
def test_the_configured_cap_evicts_after_a_pull(
    registry: Registry, flattener: StandInFlattener, banger_env: dict[str, str], tmp_path: Path
) -> None:
    first, second = ImageSpec(layers()), ImageSpec([make_layer({"big": b"b" * 5000}, "tar")])
    ref_first = registry.push(write_layout(tmp_path / "a", "v1", [first]), "team/a")
    ref_second = registry.push(write_layout(tmp_path / "b", "v1", [second]), "team/b")
    cap = len(second.layers[0].data)
    source = OciImageSource(make_plugin_context(banger_env, {"oci_cache_max": cap}))
    for number, ref in enumerate((ref_first, ref_second)):
        dest = tmp_path / f"dest{number}"
        dest.mkdir()
        source.pull(ref, dest, RecordingProgress())
    assert source.cache.usage() == cap
    assert source.cache.path(second.layers[0].digest).exists()
    assert not any(source.cache.path(b.digest).exists() for b in first.layers)
