"""What a real docker-registry will not do on demand, from a scripted HTTP server on 127.0.0.1.

The real docker-registry (test_registry.py) cannot be made to serve a schema 1
manifest, a Helm chart, an oversized manifest, more bytes than a descriptor
says, a cut-off body or a Range it ignores, nor to sit behind HTTP Basic auth
without TLS; this server can, over real HTTP.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress
from banger_hookspecs import SourceUnavailable
from banger_oci.auth import AuthError, find_credentials
from banger_oci.blobs import BlobCache, BlobError
from banger_oci.reference import parse_reference
from banger_oci.registry import (
    DOCKER_CONFIG,
    OCI_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    RegistryClient,
    RegistryError,
    ResolvedImage,
)
from plugins.oci.tests.registry_lab import digest_of, free_port, make_layer

pytestmark = pytest.mark.integration

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Scripted:
    """Routes by path; records (path, Range header) of every request."""

    port: int = 0
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handle


def blob_server(data: bytes, *, honour_range: bool = True, cut_first_at: int | None = None) -> Handler:
    """Serves ``data``; honours ``Range: bytes=N-``; the first response may stop after ``cut_first_at`` bytes."""
    cuts = [cut_first_at] if cut_first_at is not None else []

    def handle(request: BaseHTTPRequestHandler) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range") or "")
        start = int(match.group(1)) if match and honour_range else 0
        request.send_response(206 if start else 200)
        if start:
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        request.send_header("Content-Length", str(len(data) - start))
        request.end_headers()
        body = data[start:]
        if cuts:
            body = body[: cuts.pop()]
            request.wfile.write(body)
            request.close_connection = True
            return
        request.wfile.write(body)

    return handle


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            state.seen.append((path, self.headers.get("Range")))
            state.routes.get(path, reply(404))(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that stops reading (an oversized manifest) is the point of some tests

    server = Server(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def serve_image(
    scripted: Scripted, *, config: dict[str, object] | None = None, manifest: dict[str, object] | None = None
) -> tuple[str, bytes]:
    """Route an image (one layer) at ``/v2/demo``; returns (reference, layer bytes)."""
    layer = make_layer({"a": b"a" * 3000}, "tar")
    config_bytes = json.dumps(
        config or {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
    ).encode()
    document = manifest or {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": len(layer.data)}],
    }
    body = json.dumps(document).encode()
    scripted.routes["/v2/demo/manifests/v1"] = reply(200, body, {"Content-Type": OCI_MANIFEST})
    scripted.routes[f"/v2/demo/blobs/{digest_of(config_bytes)}"] = reply(200, config_bytes)
    return f"{scripted.host}/demo:v1", layer.data


def resolve(ref: str) -> ResolvedImage:
    with RegistryClient(parse_reference(ref), None) as client:
        return client.resolve(RecordingProgress())


def fetch(scripted: Scripted, data: bytes, cache: BlobCache, *, size: int | None = None) -> Path:
    blob = Descriptor("application/vnd.oci.image.layer.v1.tar", digest_of(data), len(data) if size is None else size)
    with RegistryClient(parse_reference(f"{scripted.host}/demo:v1"), None) as client, cache.locked():
        return cache.fetch(blob, client, RecordingProgress(), "layer 1/1")


def test_a_token_realm_over_plain_http_elsewhere_is_refused(scripted: Scripted) -> None:
    challenge = 'Bearer realm="http://tokens.example.com/token",service="x"'
    scripted.routes["/v2/demo/manifests/v1"] = reply(401, b"", {"WWW-Authenticate": challenge})
    with pytest.raises(
        AuthError, match=re.escape("names a token service that is not https: http://tokens.example.com/token") + "$"
    ):
        resolve(f"{scripted.host}/demo:v1")


def test_an_unknown_auth_scheme_is_one_line(scripted: Scripted) -> None:
    scripted.routes["/v2/demo/manifests/v1"] = reply(401, b"", {"WWW-Authenticate": "Negotiate"})
    with pytest.raises(AuthError, match=re.escape("asks for an unsupported authentication ('Negotiate')") + "$"):
        resolve(f"{scripted.host}/demo:v1")


def test_a_basic_challenge_without_credentials_says_so(scripted: Scripted) -> None:
    scripted.routes["/v2/demo/manifests/v1"] = reply(401, b"", {"WWW-Authenticate": 'Basic realm="r"'})
    with pytest.raises(AuthError, match="wants credentials for"):
        resolve(f"{scripted.host}/demo:v1")


def test_schema1_manifests_are_refused(scripted: Scripted) -> None:
    ref, _ = serve_image(scripted, manifest={"schemaVersion": 1, "name": "demo", "fsLayers": []})
    body = json.dumps({"schemaVersion": 1, "name": "demo", "fsLayers": []}).encode()
    schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    scripted.routes["/v2/demo/manifests/v1"] = reply(200, body, {"Content-Type": schema1})
    with pytest.raises(RegistryError, match=f"manifest type '{re.escape(schema1)}' is not supported"):
        resolve(ref)


def test_a_non_image_artifact_is_refused(scripted: Scripted) -> None:
    helm = "application/vnd.cncf.helm.config.v1+json"
    ref, _ = serve_image(
        scripted,
        manifest={
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": helm, "digest": digest_of(b"{}"), "size": 2},
            "layers": [],
        },
    )
    with pytest.raises(RegistryError, match=f"is not a container image \\(its config is '{re.escape(helm)}'\\)"):
        resolve(ref)


def test_a_foreign_layer_is_refused_by_media_type(scripted: Scripted) -> None:
    foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    config = b'{"os":"linux","architecture":"amd64","rootfs":{"diff_ids":[]}}'
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": foreign, "digest": digest_of(b"x"), "size": 1}],
    }
    ref, _ = serve_image(scripted, manifest=manifest)
    with pytest.raises(RegistryError, match=f"layer 1 has media type '{re.escape(foreign)}'; supported: "):
        resolve(ref)


def test_diff_ids_that_do_not_match_the_layers_are_refused(scripted: Scripted) -> None:
    ref, _ = serve_image(scripted, config={"os": "linux", "architecture": "amd64", "rootfs": {"diff_ids": []}})
    with pytest.raises(RegistryError, match="the config's diff_ids do not match the manifest's 1 layers"):
        resolve(ref)


def test_an_oversized_manifest_is_refused(scripted: Scripted) -> None:
    scripted.routes["/v2/demo/manifests/v1"] = reply(200, b" " * (5 << 20))
    with pytest.raises(RegistryError, match="is larger than 4 MiB: refused"):
        resolve(f"{scripted.host}/demo:v1")


def test_a_config_that_does_not_match_its_digest_is_refused(scripted: Scripted) -> None:
    ref, _ = serve_image(scripted)
    for path in [p for p in scripted.routes if "/blobs/" in p]:
        scripted.routes[path] = reply(200, b'{"os":"linux","architecture":"amd64","rootfs":{"diff_ids":[]}}')
    with pytest.raises(RegistryError, match="the image config does not match its digest"):
        resolve(ref)


def test_more_bytes_than_the_descriptor_says_are_refused(scripted: Scripted, tmp_path: Path) -> None:
    data = b"x" * 5000
    scripted.routes[f"/v2/demo/blobs/{digest_of(data)}"] = blob_server(data)
    cache = BlobCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(BlobError, match="sent more than the 4000 bytes the manifest says: refused, nothing was kept"):
        fetch(scripted, data, cache, size=4000)
    assert cache.usage() == 0


def test_a_cut_connection_is_resumed_within_the_same_pull(scripted: Scripted, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000
    path = f"/v2/demo/blobs/{digest_of(data)}"
    scripted.routes[path] = blob_server(data, cut_first_at=300_000)
    local = fetch(scripted, data, BlobCache(tmp_path / "cache", 1 << 30))
    assert local.read_bytes() == data
    assert [rng for p, rng in scripted.seen if p == path] == [None, "bytes=300000-"]


def test_a_registry_ignoring_the_range_restarts_the_blob(scripted: Scripted, tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    path = f"/v2/demo/blobs/{digest_of(data)}"
    scripted.routes[path] = blob_server(data, honour_range=False)
    cache = BlobCache(tmp_path / "cache", 1 << 30)
    with cache.locked():
        cache.partial_path(digest_of(data)).write_bytes(data[:1000])
    assert fetch(scripted, data, cache).read_bytes() == data
    assert [rng for p, rng in scripted.seen if p == path] == ["bytes=1000-"]


def test_a_connection_cut_every_time_keeps_the_partial_for_the_next_pull(scripted: Scripted, tmp_path: Path) -> None:
    data = b"y" * 10_000
    path = f"/v2/demo/blobs/{digest_of(data)}"
    scripted.routes[path] = reply(200, b"", {})  # headers say 0 bytes: every try ends short
    cache = BlobCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(SourceUnavailable, match=r"the download stopped at 0 of 10000 bytes .*pull again to resume it"):
        fetch(scripted, data, cache)
    assert len([p for p, _ in scripted.seen if p == path]) == 3


def test_an_unreachable_registry_is_unavailable() -> None:
    with pytest.raises(SourceUnavailable, match=f"registry 127.0.0.1:{(port := free_port())} is unreachable"):
        resolve(f"127.0.0.1:{port}/demo:v1")


def basic_only(expected: str, then: Handler) -> Handler:
    """A registry behind HTTP Basic auth (what an htpasswd-protected distribution registry does)."""

    def handle(request: BaseHTTPRequestHandler) -> None:
        if request.headers.get("Authorization") != expected:
            reply(401, b"", {"WWW-Authenticate": 'Basic realm="registry"'})(request)
        else:
            then(request)

    return handle


@pytest.mark.parametrize(("password", "works"), [("right", True), ("Wr0ng-pa55", False)])
def test_basic_auth_with_credentials_from_docker_config(
    scripted: Scripted, tmp_path: Path, password: str, works: bool
) -> None:
    ref, _ = serve_image(scripted)
    expected = "Basic " + base64.b64encode(b"me:right").decode()
    scripted.routes = {path: basic_only(expected, handler) for path, handler in scripted.routes.items()}
    auth_file = tmp_path / "config.json"
    auth_file.write_text(json.dumps({"auths": {scripted.host: {"username": "me", "password": password}}}))
    reference = parse_reference(ref)
    with RegistryClient(reference, find_credentials(reference.registry, auth_file)) as client:
        if works:
            assert client.resolve(RecordingProgress()).manifest_media_type == OCI_MANIFEST
        else:
            with pytest.raises(AuthError, match=r"refused the credentials of .*: check the user name and password$"):
                client.resolve(RecordingProgress())


def test_a_token_service_without_a_token_is_one_line(scripted: Scripted) -> None:
    challenge = f'Bearer realm="http://{scripted.host}/token",service="s"'
    scripted.routes["/v2/demo/manifests/v1"] = reply(401, b"", {"WWW-Authenticate": challenge})
    scripted.routes["/token"] = reply(200, b'{"nothing": "here"}')
    with pytest.raises(AuthError, match=re.escape(f"of {scripted.host} gave no token (HTTP 200)")):
        resolve(f"{scripted.host}/demo:v1")
    assert ("/token", None) in scripted.seen


def test_an_expired_token_is_renewed_once_mid_pull(scripted: Scripted, tmp_path: Path) -> None:
    """Docker Hub's tokens live 300 s: a blob asked for after that gets a 401 and a fresh token."""
    ref, data = serve_image(scripted)
    issued: list[str] = []

    def token(request: BaseHTTPRequestHandler) -> None:
        issued.append(f"t{len(issued) + 1}")
        reply(200, json.dumps({"token": issued[-1]}).encode())(request)

    def bearer(accepts: Callable[[str], bool], then: Handler) -> Handler:
        def handle(request: BaseHTTPRequestHandler) -> None:
            if accepts(request.headers.get("Authorization") or ""):
                then(request)
            else:
                challenge = f'Bearer realm="http://{scripted.host}/token",service="s",scope="repository:demo:pull"'
                reply(401, b"", {"WWW-Authenticate": challenge})(request)

        return handle

    scripted.routes = {path: bearer(lambda h: h == "Bearer t1", handler) for path, handler in scripted.routes.items()}
    scripted.routes["/token"] = token
    scripted.routes[f"/v2/demo/blobs/{digest_of(data)}"] = bearer(lambda h: h == "Bearer t2", blob_server(data))
    cache = BlobCache(tmp_path / "cache", 1 << 30)
    with RegistryClient(parse_reference(ref), None) as client, cache.locked():
        (blob,) = client.resolve(RecordingProgress()).layers
        assert cache.fetch(blob, client, RecordingProgress(), "layer").read_bytes() == data
    assert issued == ["t1", "t2"]


def test_current_digest_of_a_registry_refusing_head_comes_from_one_get(scripted: Scripted) -> None:
    """HEAD gets 501 here (the server has no do_HEAD): the digest is the GET manifest's, hashed."""
    ref, _ = serve_image(scripted)
    with RegistryClient(parse_reference(ref), None) as client:
        digest = client.current_digest()
    with RegistryClient(parse_reference(ref), None) as client:
        assert digest == client.resolve(RecordingProgress()).manifest_digest
    assert scripted.seen.count(("/v2/demo/manifests/v1", None)) == 2  # one for current_digest, one for resolve
    pinned = parse_reference(f"{scripted.host}/demo@{digest}")
    scripted.seen.clear()
    with RegistryClient(pinned, None) as client:
        assert client.current_digest() == digest
    assert scripted.seen == []  # a digest pin is its own answer
