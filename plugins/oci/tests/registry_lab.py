"""Real registries on 127.0.0.1 for the oci tests: Debian's docker-registry, skopeo, a token server.

Images are written as OCI layouts with Python's tarfile (no Docker), pushed
with ``skopeo copy``. Servers are started on ephemeral ports, waited for with
a bounded loop, and stopped by PID.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import io
import json
import secrets
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
WAIT_SECONDS = 20.0


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LayerBlob:
    """A layer as pushed: its (compressed) bytes, media type, and the uncompressed tar's digest."""

    data: bytes
    media_type: str
    diff_id: str

    @property
    def digest(self) -> str:
        return digest_of(self.data)


def make_layer(files: dict[str, bytes], compression: str = "gzip") -> LayerBlob:
    """A layer of regular files (``compression``: ``tar``, ``gzip`` or ``zstd``)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    if compression == "gzip":
        return LayerBlob(gzip.compress(plain, mtime=0), LAYER_GZIP, digest_of(plain))
    if compression == "zstd":
        return LayerBlob(zstandard.ZstdCompressor().compress(plain), LAYER_ZSTD, digest_of(plain))
    return LayerBlob(plain, LAYER_TAR, digest_of(plain))


@dataclass
class ImageSpec:
    """One platform's image: layers lowest first."""

    layers: list[LayerBlob]
    architecture: str = "amd64"

    def config(self) -> bytes:
        return json.dumps(
            {
                "architecture": self.architecture,
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            }
        ).encode()


@dataclass
class Layout:
    """An OCI layout directory and what it holds."""

    path: Path
    tag: str
    manifests: dict[str, str] = field(default_factory=dict)  # architecture -> manifest digest
    index_digest: str | None = None


def _put_blob(root: Path, data: bytes) -> dict[str, object]:
    digest = digest_of(data)
    (root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_layout(path: Path, tag: str, images: list[ImageSpec], *, as_index: bool = False) -> Layout:
    """Write an OCI layout with one image, or (``as_index``) an image index over ``images``."""
    (path / "blobs" / "sha256").mkdir(parents=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layout = Layout(path, tag)
    descriptors = []
    for image in images:
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **_put_blob(path, image.config())},
            "layers": [{"mediaType": layer.media_type, **_put_blob(path, layer.data)} for layer in image.layers],
        }
        described = {"mediaType": OCI_MANIFEST, **_put_blob(path, json.dumps(manifest).encode())}
        layout.manifests[image.architecture] = str(described["digest"])
        descriptors.append({**described, "platform": {"architecture": image.architecture, "os": "linux"}})
    top = descriptors[0]
    if as_index:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
        top = {"mediaType": OCI_INDEX, **_put_blob(path, json.dumps(index).encode())}
        layout.index_digest = str(top["digest"])
    top = {**top, "annotations": {"org.opencontainers.image.ref.name": tag}}
    top.pop("platform", None)
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return layout


def wait_for(url: str, ok: set[int], log: Path) -> None:
    """Poll ``url`` until it answers with a status in ``ok`` (bounded)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code in ok:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {WAIT_SECONDS}s: {log.read_text()[-2000:]}")


class Registry:
    """A docker-registry process on 127.0.0.1 with its storage in ``root``."""

    def __init__(self, root: Path, auth_yaml: str = "") -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = root / "storage"
        self.storage.mkdir(parents=True)
        config = root / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            f"http:\n  addr: {self.host}\n{auth_yaml}"
        )
        self.log = root / "registry.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_for(f"http://{self.host}/v2/", {200, 401}, self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.kill()  # our own child, by PID
        self.process.wait(timeout=10)

    def push(self, layout: Layout, repo: str, *, all_images: bool = False, v2s2: bool = False, creds: str = "") -> str:
        """``skopeo copy`` the layout's tag to ``REGISTRY/repo:tag``; returns that reference."""
        dest = f"{self.host}/{repo}:{layout.tag}"
        argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        argv += [] if v2s2 else ["--preserve-digests"]  # what the test wrote is what the registry serves
        argv += ["--all"] if all_images else []
        argv += ["--format", "v2s2"] if v2s2 else []
        argv += ["--dest-creds", creds] if creds else []
        subprocess.run(
            [*argv, f"oci:{layout.path}:{layout.tag}", f"docker://{dest}"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return dest

    def blob_file(self, digest: str) -> Path:
        """Where the registry's filesystem driver keeps blob ``digest``."""
        hex_digest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A loopback token service: ES256 JWTs with an ``x5c`` certificate, for one user and password."""

    SERVICE = "banger-test-registry"
    ISSUER = "banger-test-tokens"

    def __init__(self, root: Path, username: str, password: str, *, anonymous_pull: bool = False) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "banger test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = root / "token-cert.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.anonymous_pull = anonymous_pull
        self.requests: list[dict[str, list[str]]] = []
        self.authorized: list[bool] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                server.requests.append(query)
                given = self.headers.get("Authorization")
                server.authorized.append(given is not None)
                anonymous = given is None and server.anonymous_pull
                if given != server.expected and not anonymous:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(query, pull_only=anonymous)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, query: dict[str, list[str]], *, pull_only: bool = False) -> str:
        """A JWT granting the asked scopes (only their ``pull`` for an anonymous caller, like Docker Hub)."""
        access = []
        for scope in query.get("scope", []):
            kind, repo, actions = scope.split(":")
            granted = [a for a in actions.split(",") if a == "pull" or not pull_only]
            access.append({"type": kind, "name": repo, "actions": granted})
        now = int(time.time())
        header = {
            "alg": "ES256",
            "typ": "JWT",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.ISSUER,
            "sub": "tester",
            "aud": self.SERVICE,
            "exp": now + 600,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def registry_auth_yaml(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: http://127.0.0.1:{self.port}/token\n"
            f"    service: {self.SERVICE}\n"
            f"    issuer: {self.ISSUER}\n"
            f"    rootcertbundle: {self.bundle}\n"
        )

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A docker-registry on 127.0.0.1 for one test, stopped after it (also when it fails)."""
    server = Registry(tmp_path / "registry")
    try:
        yield server
    finally:
        server.stop()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces (root filesystems are hundreds of MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
