"""The registry side against a real registry on 127.0.0.1 (Debian's docker-registry, images pushed with skopeo)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from banger_core.testing import RecordingProgress
from banger_oci.blobs import BlobCache, BlobError
from banger_oci.reference import parse_reference
from banger_oci.registry import DOCKER_MANIFEST, OCI_MANIFEST, RegistryClient, RegistryError, ResolvedImage
from plugins.oci.tests.registry_lab import ImageSpec, LayerBlob, Registry, digest_of, make_layer, write_layout

pytestmark = pytest.mark.integration


class RecordingTransport(httpx.HTTPTransport):
    """A real HTTP transport that notes each request's path, Range header and status."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.seen.append((request.url.path, request.headers.get("range"), response.status_code))
        return response

    def blob_requests(self, digest: str) -> list[tuple[str | None, int]]:
        return [(rng, status) for path, rng, status in self.seen if path.endswith(f"/blobs/{digest}")]


def three_layers() -> list[LayerBlob]:
    return [
        make_layer({"etc/os-release": b"ID=test\n", "bin/tool": os.urandom(300_000)}, "gzip"),
        make_layer({"etc/zstd": b"zstd layer\n"}, "zstd"),
        make_layer({"srv/plain": b"plain tar layer\n"}, "tar"),
    ]


def resolve(ref: str, transport: httpx.BaseTransport | None = None) -> ResolvedImage:
    with RegistryClient(parse_reference(ref), None, transport=transport) as client:
        return client.resolve(RecordingProgress())


def fetch_all(ref: str, cache: BlobCache, transport: httpx.BaseTransport | None = None) -> list[Path]:
    with RegistryClient(parse_reference(ref), None, transport=transport) as client, cache.locked():
        resolved = client.resolve(RecordingProgress())
        return [cache.fetch(blob, client, RecordingProgress(), f"layer {blob.digest}") for blob in resolved.layers]


def test_pull_by_tag_verifies_and_caches_gzip_zstd_and_plain_layers(registry: Registry, tmp_path: Path) -> None:
    layers = three_layers()
    layout = write_layout(tmp_path / "layout", "v1", [ImageSpec(layers)])
    ref = registry.push(layout, "team/base")

    resolved = resolve(ref)
    assert resolved.manifest_digest == layout.manifests["amd64"]
    assert resolved.index_digest is None
    assert resolved.manifest_media_type == OCI_MANIFEST
    assert [(b.media_type, b.digest, b.size) for b in resolved.layers] == [
        (layer.media_type, layer.digest, len(layer.data)) for layer in layers
    ]
    assert resolved.diff_ids == tuple(layer.diff_id for layer in layers)

    cache = BlobCache(tmp_path / "cache", 1 << 30)
    paths = fetch_all(ref, cache)
    assert [p.read_bytes() for p in paths] == [layer.data for layer in layers]
    assert [p.name for p in paths] == [layer.digest[7:] for layer in layers]
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in paths)


def test_pull_by_digest_and_an_unknown_digest(registry: Registry, tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "layout", "v1", [ImageSpec(three_layers())])
    registry.push(layout, "team/base")
    pinned = f"{registry.host}/team/base@{layout.manifests['amd64']}"
    assert resolve(pinned).manifest_digest == layout.manifests["amd64"]

    missing = f"{registry.host}/team/base@{digest_of(b'no such manifest')}"
    with pytest.raises(RegistryError, match=re.escape(f"registry {registry.host} has no {missing}") + "$"):
        resolve(missing)
    with pytest.raises(RegistryError, match=re.escape(f"has no {registry.host}/team/base:nope")):
        resolve(f"{registry.host}/team/base:nope")


def test_an_image_index_picks_linux_amd64(registry: Registry, tmp_path: Path) -> None:
    arm = ImageSpec([make_layer({"arm": b"arm64\n"})], architecture="arm64")
    amd = ImageSpec(three_layers())
    layout = write_layout(tmp_path / "layout", "multi", [arm, amd], as_index=True)
    ref = registry.push(layout, "team/multi", all_images=True)

    resolved = resolve(ref)
    assert resolved.index_digest == layout.index_digest
    assert resolved.manifest_digest == layout.manifests["amd64"]
    assert resolved.diff_ids == tuple(layer.diff_id for layer in amd.layers)

    only_arm = write_layout(tmp_path / "arm-only", "arm", [arm, ImageSpec(arm.layers, "s390x")], as_index=True)
    ref = registry.push(only_arm, "team/arm", all_images=True)
    with pytest.raises(RegistryError, match=r"has no linux/amd64 image \(it offers linux/arm64, linux/s390x\)$"):
        resolve(ref)


def test_docker_schema2_media_types(registry: Registry, tmp_path: Path) -> None:
    layers = [make_layer({"a": b"1"}, "gzip"), make_layer({"b": b"2"}, "gzip")]
    layout = write_layout(tmp_path / "layout", "v2s2", [ImageSpec(layers)])
    ref = registry.push(layout, "team/docker", v2s2=True)

    resolved = resolve(ref)
    assert resolved.manifest_media_type == DOCKER_MANIFEST
    assert {b.media_type for b in resolved.layers} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert resolved.diff_ids == tuple(layer.diff_id for layer in layers)
    paths = fetch_all(ref, BlobCache(tmp_path / "cache", 1 << 30))
    assert [p.read_bytes() for p in paths] == [layer.data for layer in layers]


def test_a_single_arm64_image_is_refused(registry: Registry, tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "layout", "arm", [ImageSpec([make_layer({"a": b"1"})], "arm64")])
    ref = registry.push(layout, "team/arm")
    with pytest.raises(RegistryError, match="is a linux/arm64 image; banger runs linux/amd64 only"):
        resolve(ref)


def test_a_tampered_layer_is_refused_and_nothing_is_kept(registry: Registry, tmp_path: Path) -> None:
    layers = three_layers()
    ref = registry.push(write_layout(tmp_path / "layout", "v1", [ImageSpec(layers)]), "team/base")
    stored = registry.blob_file(layers[0].digest)
    tampered = bytearray(stored.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # same size, one byte flipped
    stored.write_bytes(bytes(tampered))

    cache = BlobCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(BlobError, match=f"digest sha256:[0-9a-f]{{64}} instead of {layers[0].digest}: refused"):
        fetch_all(ref, cache)
    assert not cache.path(layers[0].digest).exists()
    assert not cache.partial_path(layers[0].digest).exists()
    assert cache.usage() == 0


def test_a_tampered_manifest_is_refused(registry: Registry, tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "layout", "v1", [ImageSpec(three_layers())])
    ref = registry.push(layout, "team/base")
    stored = registry.blob_file(layout.manifests["amd64"])
    stored.write_bytes(stored.read_bytes() + b"\n")  # still valid JSON, another digest

    with pytest.raises(RegistryError, match=f"whose digest is sha256:[0-9a-f]{{64}}, not {layout.manifests['amd64']}"):
        resolve(ref)
    pinned = f"{registry.host}/team/base@{layout.manifests['amd64']}"
    with pytest.raises(RegistryError, match="refused"):
        resolve(pinned)


def test_a_truncated_partial_download_is_resumed_with_a_range(registry: Registry, tmp_path: Path) -> None:
    layers = three_layers()
    ref = registry.push(write_layout(tmp_path / "layout", "v1", [ImageSpec(layers)]), "team/base")
    big = layers[0]
    cache = BlobCache(tmp_path / "cache", 1 << 30)
    with cache.locked():
        cache.partial_path(big.digest).write_bytes(big.data[: len(big.data) // 3])  # an earlier pull, cut off

    transport = RecordingTransport()
    paths = fetch_all(ref, cache, transport)
    assert paths[0].read_bytes() == big.data
    assert transport.blob_requests(big.digest) == [(f"bytes={len(big.data) // 3}-", 206)]
    assert not cache.partial_path(big.digest).exists()

    again = RecordingTransport()
    fetch_all(ref, cache, again)
    assert again.blob_requests(big.digest) == [], "a cached blob is not downloaded again"


def test_a_partial_with_wrong_bytes_is_not_trusted(registry: Registry, tmp_path: Path) -> None:
    layers = three_layers()
    ref = registry.push(write_layout(tmp_path / "layout", "v1", [ImageSpec(layers)]), "team/base")
    cache = BlobCache(tmp_path / "cache", 1 << 30)
    with cache.locked():
        cache.partial_path(layers[0].digest).write_bytes(b"\0" * 1000)

    with pytest.raises(BlobError, match="refused as corrupt or tampered"):
        fetch_all(ref, cache)
    assert not cache.partial_path(layers[0].digest).exists()
    fetch_all(ref, cache)  # the next pull starts that blob over
    assert cache.path(layers[0].digest).read_bytes() == layers[0].data


def test_the_size_cap_evicts_least_recently_used_blobs(registry: Registry, tmp_path: Path) -> None:
    first = [make_layer({"one": os.urandom(200_000)}, "tar"), make_layer({"two": os.urandom(200_000)}, "tar")]
    second = [make_layer({"three": os.urandom(150_000)}, "tar")]
    ref_first = registry.push(write_layout(tmp_path / "a", "v1", [ImageSpec(first)]), "team/a")
    ref_second = registry.push(write_layout(tmp_path / "b", "v1", [ImageSpec(second)]), "team/b")
    cap = len(second[0].data) + len(first[1].data) + 1000
    cache = BlobCache(tmp_path / "cache", cap)

    fetch_all(ref_first, cache)
    os.utime(cache.path(first[0].digest), (1, 1))  # used long ago
    fetch_all(ref_second, cache)
    with cache.locked():
        removed = cache.evict(keep=[second[0].digest])
    assert removed == [cache.path(first[0].digest)]
    assert cache.path(first[1].digest).exists() and cache.path(second[0].digest).exists()
    assert cache.usage() <= cap

    tiny = BlobCache(tmp_path / "cache", 0)
    with tiny.locked():
        tiny.evict(keep=[second[0].digest])
    assert tiny.usage() == 0, "the cap wins over the blobs just used"


def test_a_cached_blob_damaged_on_disk_is_downloaded_again(registry: Registry, tmp_path: Path) -> None:
    layers = three_layers()
    ref = registry.push(write_layout(tmp_path / "layout", "v1", [ImageSpec(layers)]), "team/base")
    cache = BlobCache(tmp_path / "cache", 1 << 30)
    cached = fetch_all(ref, cache)[0]
    cached.chmod(0o644)
    cached.write_bytes(b"\0" * len(layers[0].data))  # same size, other bytes

    transport = RecordingTransport()
    again = fetch_all(ref, cache, transport)
    assert again[0].read_bytes() == layers[0].data
    assert transport.blob_requests(layers[0].digest) == [(None, 200)]
