"""The push side against docker-registry on 127.0.0.1 (and a scripted loopback registry): the artifact's bytes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from banger_core.common.bundles import BundleInfo, write_bundle
from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs.bundle import BundleError
from banger_oci.artifact import ARTIFACT_TYPES, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPES
from banger_oci.auth import find_credentials
from banger_oci.push import publish_bundle
from banger_oci.reference import parse_reference
from banger_oci.registry import RegistryClient, RegistryError
from banger_oci.source import OciImageSource
from plugins.oci.tests.registry_lab import Registry, digest_of

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def bundle(tmp_path: Path) -> BundleInfo:
    source = tmp_path / "golden"
    source.mkdir()
    (source / "rootfs.ext4").write_bytes(b"\x53\xef" * 50_000)
    (source / "manifest.json").write_text(json.dumps({"name": "golden", "version": "7", "kernel_ref": "generic-6.1"}))
    return write_bundle("image", source, tmp_path / "golden.tar.zst", RecordingProgress())


def test_the_pushed_blobs_are_the_bundle_and_its_manifest_byte_for_byte(registry: Registry, bundle: BundleInfo) -> None:
    progress = RecordingProgress()

    published = publish_bundle(bundle.path, bundle.manifest, f"{registry.host}/team/golden:v1", None, progress)

    raw = httpx.get(
        f"http://{registry.host}/v2/team/golden/manifests/{published.digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).content
    assert digest_of(raw) == published.digest
    manifest = json.loads(raw)
    assert manifest["artifactType"] == ARTIFACT_TYPES["image"]
    config, layer = manifest["config"], manifest["layers"][0]
    assert config["mediaType"] == CONFIG_MEDIA_TYPE and layer["mediaType"] == LAYER_MEDIA_TYPES["image"]
    blob = f"http://{registry.host}/v2/team/golden/blobs/"
    assert httpx.get(blob + layer["digest"]).content == bundle.path.read_bytes()
    assert httpx.get(blob + config["digest"]).content == bundle.manifest.raw
    assert published.uploaded == bundle.size + len(bundle.manifest.raw)
    assert published.reference == f"{registry.host}/team/golden@{published.digest}"
    assert max(done for done, total, _ in progress.advances if total == bundle.size) == bundle.size


def test_a_tag_elsewhere_reuses_the_blobs_and_names_the_same_digest(registry: Registry, bundle: BundleInfo) -> None:
    first = publish_bundle(bundle.path, bundle.manifest, f"{registry.host}/team/golden:v1", None, RecordingProgress())
    second = publish_bundle(
        bundle.path, bundle.manifest, f"{registry.host}/team/golden:latest", None, RecordingProgress()
    )

    assert second.uploaded == 0 and second.digest == first.digest


@dataclass
class Recorded:
    """Requests a loopback server saw: (method, path, Authorization header)."""

    seen: list[tuple[str, str, str | None]] = field(default_factory=list)


def serve(answer: Callable[[BaseHTTPRequestHandler, Recorded], None]) -> tuple[ThreadingHTTPServer, Recorded]:
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self) -> None:
            recorded.seen.append((self.command, self.path, self.headers.get("Authorization")))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            answer(self, recorded)

        do_HEAD = do_POST = do_PUT = handle_any

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, recorded


def test_registry_credentials_never_go_to_an_upload_url_on_another_host(tmp_path: Path) -> None:
    """A registry may hand out an upload Location elsewhere (a blob store): the PUT there carries no credentials."""

    def storage_answer(request: BaseHTTPRequestHandler, recorded: Recorded) -> None:
        request.send_response(201)
        request.send_header("Content-Length", "0")
        request.end_headers()

    storage, stored = serve(storage_answer)
    storage_url = f"http://localhost:{storage.server_address[1]}/upload/abc?_state=x"

    def registry_answer(request: BaseHTTPRequestHandler, recorded: Recorded) -> None:
        if request.headers.get("Authorization") is None:
            request.send_response(401)
            request.send_header("WWW-Authenticate", 'Basic realm="registry"')
        elif request.command == "POST":
            request.send_response(202)
            request.send_header("Location", storage_url)
        else:
            request.send_response(404)
        request.send_header("Content-Length", "0")
        request.end_headers()

    registry, asked = serve(registry_answer)
    try:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"auths": {f"127.0.0.1:{registry.server_address[1]}": {"auth": "bWU6c2VjcmV0"}}}))
        reference = parse_reference(f"127.0.0.1:{registry.server_address[1]}/team/golden:v1")
        with RegistryClient(reference, find_credentials(reference.registry, config)) as client:
            client.upload_blob(digest_of(b"data"), 4, lambda: b"data")
    finally:
        registry.shutdown()
        storage.shutdown()

    assert [(method, auth) for method, _, auth in asked.seen] == [("POST", None), ("POST", "Basic bWU6c2VjcmV0")]
    assert stored.seen == [("PUT", f"/upload/abc?_state=x&digest={digest_of(b'data').replace(':', '%3A')}", None)]


def publish_by_hand(registry: Registry, bundle: BundleInfo, config: bytes, manifest: dict[str, object]) -> str:
    """Upload ``bundle`` and ``config`` and tag ``manifest`` (with their descriptors filled in); return the ref."""
    reference = parse_reference(f"{registry.host}/team/odd:v1")
    data = bundle.path.read_bytes()
    with RegistryClient(reference, None) as client:
        client.upload_blob(digest_of(data), len(data), lambda: data)
        client.upload_blob(digest_of(config), len(config), lambda: config)
        manifest["config"] = {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest_of(config), "size": len(config)}
        manifest["layers"] = [{"mediaType": LAYER_MEDIA_TYPES["image"], "digest": digest_of(data), "size": len(data)}]
        client.put_manifest("v1", json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    return str(reference)


def test_an_artifact_whose_registry_dropped_artifact_type_is_still_recognised(
    registry: Registry, bundle: BundleInfo, banger_env: dict[str, str], tmp_path: Path
) -> None:
    document: dict[str, object] = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
    ref = publish_by_hand(registry, bundle, bundle.manifest.raw, document)
    dest = tmp_path / "dest"
    dest.mkdir()

    artifact = OciImageSource(make_plugin_context(banger_env)).pull(ref, dest, RecordingProgress())

    assert (artifact.name, artifact.version, artifact.kernel_ref) == ("golden", "7", "generic-6.1")
    assert (dest / "rootfs.ext4").read_bytes() == b"\x53\xef" * 50_000


def test_a_config_that_is_not_the_bundles_manifest_is_refused_and_nothing_is_unpacked(
    registry: Registry, bundle: BundleInfo, banger_env: dict[str, str], tmp_path: Path
) -> None:
    other = json.loads(bundle.manifest.raw)
    other["kernel_ref"] = "somebody-elses-kernel"
    config = json.dumps(other).encode()
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPES["image"],
    }
    ref = publish_by_hand(registry, bundle, config, document)
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(BundleError) as caught:
        OciImageSource(make_plugin_context(banger_env)).pull(ref, dest, RecordingProgress())

    assert str(caught.value) == (
        f"image artifact {ref}: the bundle's manifest.json is not the artifact's config; it was rejected, "
        "tell its publisher"
    )
    assert list(dest.iterdir()) == []


def test_a_banger_artifact_of_an_unknown_kind_asks_for_an_upgrade(
    registry: Registry, bundle: BundleInfo, banger_env: dict[str, str], tmp_path: Path
) -> None:
    reference = parse_reference(f"{registry.host}/team/future:v1")
    config = bundle.manifest.raw
    with RegistryClient(reference, None) as client:
        client.upload_blob(digest_of(config), len(config), lambda: config)
        document = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest_of(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.banger.snapshot.bundle.v1.tar+zstd",
                    "digest": digest_of(config),
                    "size": len(config),
                }
            ],
        }
        client.put_manifest("v1", json.dumps(document).encode(), "application/vnd.oci.image.manifest.v1+json")

    with pytest.raises(RegistryError, match=r"is a banger artifact of no kind this banger knows: upgrade banger$"):
        OciImageSource(make_plugin_context(banger_env)).pull(str(reference), tmp_path, RecordingProgress())
