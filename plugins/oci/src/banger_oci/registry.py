"""The registry side of a pull: the v2 API over httpx, auth challenges, and manifest resolution.

:class:`RegistryClient` speaks to one repository. A ``401`` with a
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` challenge is
answered by fetching a token from the realm (with the user's credentials when
there are any, anonymously otherwise) and sending the request again; a
``Basic`` challenge is answered with the credentials directly.

:meth:`RegistryClient.resolve` turns a reference into the linux/amd64 image:
an OCI image index or Docker manifest list picks its linux/amd64 entry, the
manifest (OCI or Docker schema 2) gives the config and the layers, the config
gives the layers' ``diff_ids``. Every manifest is checked against the digest it
was asked by (or the one the registry announces), the config blob against its
descriptor. Layer blobs are verified by :mod:`banger_oci.blobs`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from banger_hookspecs import Progress, SourceUnavailable
from banger_oci.auth import AuthError, Credentials, parse_challenge
from banger_oci.reference import OciError, Reference, is_loopback

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
#: Layer media types the flattener reads (tar, gzip, zstd).
LAYER_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
PLATFORM = ("linux", "amd64")
#: Manifests and configs are read into memory: refuse anything larger than this.
MAX_DOCUMENT = 4 << 20
USER_AGENT = "banger-oci/0.1"
DEFAULT_TIMEOUT = 30.0
_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])


class RegistryError(OciError):
    """The registry answered something banger cannot use (missing image, bad manifest, wrong digest)."""


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor from a manifest."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class ResolvedImage:
    """What :meth:`RegistryClient.resolve` found for a reference.

    Attributes:
        manifest_digest: digest of the linux/amd64 image manifest.
        index_digest: digest of the index or manifest list it came from, if any.
        manifest_media_type: OCI or Docker schema 2.
        config_digest: digest of the image config.
        layers: the layers, lowest first.
        diff_ids: the uncompressed digest of each layer, from the config.
    """

    manifest_digest: str
    index_digest: str | None
    manifest_media_type: str
    config_digest: str
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]


@dataclass(frozen=True)
class FetchedManifest:
    """An image manifest as the registry served it, digest checked, not interpreted yet.

    Attributes:
        what: names it in messages (the reference, plus the platform entry it came from).
        digest: its digest.
        index_digest: digest of the index or manifest list it came from, if any.
        media_type: its media type.
        document: the parsed JSON.
    """

    what: str
    digest: str
    index_digest: str | None
    media_type: str
    document: dict[str, Any]


def _basic(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_descriptor(raw: object, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where} is not a descriptor object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise RegistryError(f"{where} lacks a mediaType or a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{where} has no valid size")
    if len(digest) != 71 or any(c not in "0123456789abcdef" for c in digest[7:]):
        raise RegistryError(f"{where} has a malformed digest {digest[:80]!r}")
    return Descriptor(media_type, digest, size)


class RegistryClient:
    """One repository of one registry, with its auth state. Use as a context manager."""

    def __init__(
        self,
        ref: Reference,
        credentials: Credentials | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.ref = ref
        self._credentials = credentials
        self._authorization: str | None = None
        self._http = httpx.Client(
            base_url=ref.base_url,
            timeout=timeout,
            follow_redirects=True,  # blob stores redirect; httpx drops Authorization on another origin
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            verify=ssl.create_default_context(),  # the host's trust store, as curl and apt use, not certifi's
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    # -- HTTP with auth -----------------------------------------------------

    @contextmanager
    def _send(
        self,
        path: str | httpx.URL,
        headers: dict[str, str],
        *,
        method: str = "GET",
        body: Callable[[], Iterable[bytes] | bytes] | None = None,
    ) -> Iterator[httpx.Response]:
        """Send ``method path`` (relative to ``/v2/``), answering one auth challenge; the response streams.

        ``body`` makes the request's content afresh for each attempt (a challenge means sending it twice).
        """
        # An upload URL (a Location header) may name another host: the registry's credentials never go there.
        own = not isinstance(path, httpx.URL) or _same_origin(path, self._http.base_url)
        for attempt in range(2):
            auth = {"Authorization": self._authorization} if self._authorization and own else {}
            request = self._http.build_request(
                method, path, headers=headers | auth, content=body() if body is not None else None
            )
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise SourceUnavailable(f"registry {self.ref.registry} is unreachable: {exc}") from None
            if response.status_code == 401 and attempt == 0:
                challenge = response.headers.get("www-authenticate", "")
                response.close()
                self._authenticate(challenge)
                continue
            try:
                if response.status_code in (401, 403):
                    raise self._refused()
                yield response
            finally:
                response.close()
            return

    def _refused(self) -> AuthError:
        what = f"{self.ref.registry}/{self.ref.repository}"
        if self._credentials is None:
            return AuthError(f"registry {self.ref.registry} wants credentials for {what}: `docker login` writes them")
        return AuthError(
            f"registry {self.ref.registry} refused the credentials of {self._credentials.origin} for {what}: "
            "check the user name and password"
        )

    def _authenticate(self, header: str) -> None:
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise self._refused()
            self._authorization = _basic(self._credentials)
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise AuthError(f"registry {self.ref.registry} asks for an unsupported authentication ({header[:60]!r})")
        realm = httpx.URL(challenge.params["realm"])
        if realm.scheme != "https" and not (realm.scheme == "http" and is_loopback(realm.host)):
            raise AuthError(f"registry {self.ref.registry} names a token service that is not https: {realm}")
        params = {"scope": challenge.params.get("scope", f"repository:{self.ref.repository}:pull")}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        basic = None
        if self._credentials is not None:
            basic = httpx.BasicAuth(self._credentials.username, self._credentials.password)
        try:
            response = self._http.get(realm, params=params, auth=basic)
        except httpx.TransportError as exc:
            service = f"token service {realm.host} of {self.ref.registry}"
            raise SourceUnavailable(f"{service} is unreachable: {exc}") from None
        if response.status_code in (401, 403):
            raise self._refused()
        try:
            body = response.raise_for_status().json()
            token = body.get("token") or body.get("access_token")
        except (httpx.HTTPStatusError, ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"token service {realm.host} of {self.ref.registry} gave no token (HTTP {response.status_code})"
            )
        self._authorization = f"Bearer {token}"

    def _document(self, path: str, accept: str, what: str) -> tuple[bytes, httpx.Headers]:
        with self._send(path, {"Accept": accept}) as response:
            if response.status_code == 404:
                raise RegistryError(f"registry {self.ref.registry} has no {what}")
            if response.status_code != 200:
                raise RegistryError(f"registry {self.ref.registry} answered HTTP {response.status_code} for {what}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise RegistryError(f"{what} is larger than {MAX_DOCUMENT >> 20} MiB: refused")
            return bytes(body), response.headers

    # -- resolution -----------------------------------------------------------

    def _manifest(self, reference: str, expected: str | None, what: str) -> tuple[str, str, dict[str, Any]]:
        """Fetch a manifest or index; returns (digest, media type, parsed JSON), the digest checked."""
        body, headers = self._document(f"{self.ref.repository}/manifests/{reference}", _ACCEPT, what)
        digest = sha256_digest(body)
        announced = expected or headers.get("docker-content-digest")
        if announced is not None and announced != digest:
            raise RegistryError(
                f"{what}: the registry sent a manifest whose digest is {digest}, not {announced}: refused"
            )
        try:
            document = json.loads(body)
        except ValueError:
            raise RegistryError(f"{what}: the manifest is not JSON") from None
        if not isinstance(document, dict):
            raise RegistryError(f"{what}: the manifest is not a JSON object")
        media_type = document.get("mediaType") or headers.get("content-type", "").split(";")[0].strip()
        return digest, str(media_type), document

    def current_digest(self) -> str:
        """The digest the reference names now, from one manifest request (no layer, no config).

        A ``HEAD`` answered with ``Docker-Content-Digest`` (as distribution,
        Docker Hub, GHCR and Harbor answer; Docker Hub does not count it against
        pull limits) is enough: the digest only decides whether to pull again,
        and a pull checks everything it downloads. A registry that announces no
        digest (or refuses HEAD) is asked with a ``GET``, and the manifest is
        hashed; its errors (no such tag) are the ``GET``'s.
        """
        if self.ref.digest is not None:
            return self.ref.digest
        path = f"{self.ref.repository}/manifests/{self.ref.manifest_ref}"
        with self._send(path, {"Accept": _ACCEPT}, method="HEAD") as response:
            announced = str(response.headers.get("docker-content-digest", "")) if response.status_code == 200 else ""
        if len(announced) == 71 and announced.startswith("sha256:"):
            return announced
        digest, _, _ = self._manifest(self.ref.manifest_ref, None, str(self.ref))
        return digest

    def fetch_manifest(self, progress: Progress) -> FetchedManifest:
        """The reference's image manifest, its digest checked; an index gives its linux/amd64 entry."""
        what = str(self.ref)
        progress.step(f"resolving {what}")
        digest, media_type, document = self._manifest(self.ref.manifest_ref, self.ref.digest, what)
        index_digest = None
        if media_type in INDEX_TYPES:
            index_digest = digest
            entry = self._pick_platform(document, what)
            what = f"{what} (linux/amd64 {entry.digest[:19]})"
            digest, media_type, document = self._manifest(entry.digest, entry.digest, what)
        return FetchedManifest(what, digest, index_digest, media_type, document)

    def resolve(self, progress: Progress, fetched: FetchedManifest | None = None) -> ResolvedImage:
        """Find the linux/amd64 image for the reference (or in ``fetched``); see the module docstring."""
        fetched = fetched or self.fetch_manifest(progress)
        what, digest, index_digest = fetched.what, fetched.digest, fetched.index_digest
        media_type, document = fetched.media_type, fetched.document
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(
                f"{what}: manifest type {media_type or 'unknown'!r} is not supported "
                "(OCI image manifests, OCI indexes and Docker schema 2 are)"
            )
        config = parse_descriptor(document.get("config"), f"{what}: config")
        if config.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
            raise RegistryError(f"{what} is not a container image (its config is {config.media_type!r})")
        raw_layers = document.get("layers")
        if not isinstance(raw_layers, list) or not raw_layers:
            raise RegistryError(f"{what}: the manifest lists no layers")
        layers = tuple(parse_descriptor(raw, f"{what}: layer {i + 1}") for i, raw in enumerate(raw_layers))
        for i, layer in enumerate(layers):
            if layer.media_type not in LAYER_MEDIA_TYPES:
                raise RegistryError(
                    f"{what}: layer {i + 1} has media type {layer.media_type!r}; supported: "
                    + ", ".join(sorted(LAYER_MEDIA_TYPES))
                )
        diff_ids = self._diff_ids(config, len(layers), what)
        return ResolvedImage(digest, index_digest, media_type, config.digest, layers, diff_ids)

    @staticmethod
    def _pick_platform(index: dict[str, Any], what: str) -> Descriptor:
        entries = index.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError(f"{what}: the image index has no manifests")
        found = []
        for i, raw in enumerate(entries):
            platform = raw.get("platform") if isinstance(raw, dict) else None
            if isinstance(platform, dict) and (platform.get("os"), platform.get("architecture")) == PLATFORM:
                found.append(parse_descriptor(raw, f"{what}: index entry {i + 1}"))
        if not found:
            offered = sorted(
                {
                    f"{e['platform'].get('os')}/{e['platform'].get('architecture')}"
                    for e in entries
                    if isinstance(e, dict) and isinstance(e.get("platform"), dict)
                }
            )
            raise RegistryError(f"{what} has no linux/amd64 image (it offers {', '.join(offered) or 'none'})")
        return found[0]

    def _diff_ids(self, config: Descriptor, count: int, what: str) -> tuple[str, ...]:
        if config.size > MAX_DOCUMENT:
            raise RegistryError(f"{what}: the image config is larger than {MAX_DOCUMENT >> 20} MiB: refused")
        body, _ = self._document(f"{self.ref.repository}/blobs/{config.digest}", "*/*", f"{what} config")
        if len(body) != config.size or sha256_digest(body) != config.digest:
            raise RegistryError(f"{what}: the image config does not match its digest {config.digest}: refused")
        try:
            image_config = json.loads(body)
            os_arch = (image_config.get("os"), image_config.get("architecture"))
            diff_ids = image_config["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RegistryError(f"{what}: the image config has no rootfs.diff_ids") from None
        if os_arch != PLATFORM:
            raise RegistryError(f"{what} is a {os_arch[0]}/{os_arch[1]} image; banger runs linux/amd64 only")
        if (
            not isinstance(diff_ids, list)
            or len(diff_ids) != count
            or not all(isinstance(d, str) and len(d) == 71 and d.startswith("sha256:") for d in diff_ids)
        ):
            raise RegistryError(f"{what}: the config's diff_ids do not match the manifest's {count} layers")
        return tuple(diff_ids)

    # -- blobs ------------------------------------------------------------------

    @contextmanager
    def open_blob(self, digest: str, offset: int = 0) -> Iterator[httpx.Response]:
        """Stream blob ``digest`` from byte ``offset`` (a ``Range`` request); status 200 or 206."""
        # identity: byte offsets must count the blob's own bytes for a Range to resume it.
        headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
        with self._send(f"{self.ref.repository}/blobs/{digest}", headers) as response:
            if response.status_code == 404:
                raise RegistryError(f"registry {self.ref.registry} has no blob {digest} of {self.ref.repository}")
            if response.status_code not in (200, 206, 416):
                raise RegistryError(
                    f"registry {self.ref.registry} answered HTTP {response.status_code} for blob {digest}"
                )
            yield response

    def read_blob(self, blob: Descriptor, what: str) -> bytes:
        """A small blob (a config) into memory, checked against its descriptor."""
        if blob.size > MAX_DOCUMENT:
            raise RegistryError(f"{what} is larger than {MAX_DOCUMENT >> 20} MiB: refused")
        body, _ = self._document(f"{self.ref.repository}/blobs/{blob.digest}", "*/*", what)
        if len(body) != blob.size or sha256_digest(body) != blob.digest:
            raise RegistryError(f"{what} does not match its digest {blob.digest}: refused")
        return body

    # -- uploads (the distribution spec's push side) -------------------------------

    def has_blob(self, digest: str) -> bool:
        """True when the repository already holds blob ``digest`` (a ``HEAD``, so nothing is uploaded twice)."""
        with self._send(f"{self.ref.repository}/blobs/{digest}", {}, method="HEAD") as response:
            if response.status_code in (200, 307):
                return True
            if response.status_code == 404:
                return False
            raise RegistryError(f"registry {self.ref.registry} answered HTTP {response.status_code} for blob {digest}")

    def upload_blob(self, digest: str, size: int, body: Callable[[], Iterable[bytes] | bytes]) -> None:
        """Upload one blob monolithically: ``POST`` an upload session, then ``PUT`` the bytes with their digest.

        ``body`` gives the ``size`` bytes afresh on each call. The registry checks the digest; a blob it
        refuses is an error, never a half-published artifact (the manifest goes up only after every blob).
        """
        upload = f"{self.ref.repository}/blobs/uploads/"
        with self._send(upload, {"Content-Length": "0"}, method="POST") as response:
            location = response.headers.get("location")
            if response.status_code != 202 or not location:
                raise RegistryError(
                    f"registry {self.ref.registry} refused to start an upload to {self.ref.repository} "
                    f"(HTTP {response.status_code}{_error_detail(response)})"
                )
        url = self._http.base_url.join(location)
        url = url.copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self._send(url, headers, method="PUT", body=body) as response:
            if response.status_code != 201:
                raise RegistryError(
                    f"registry {self.ref.registry} refused blob {digest} (HTTP {response.status_code}"
                    f"{_error_detail(response)})"
                )

    def put_manifest(self, tag: str, manifest: bytes, media_type: str) -> str:
        """``PUT`` a manifest under ``tag``; returns its digest (the one to pin)."""
        digest = sha256_digest(manifest)
        with self._send(
            f"{self.ref.repository}/manifests/{tag}",
            {"Content-Type": media_type},
            method="PUT",
            body=lambda: manifest,
        ) as response:
            if response.status_code not in (200, 201):
                raise RegistryError(
                    f"registry {self.ref.registry} refused the manifest for {self.ref.repository}:{tag} "
                    f"(HTTP {response.status_code}{_error_detail(response)})"
                )
            announced = response.headers.get("docker-content-digest")
            if announced is not None and announced != digest:
                raise RegistryError(
                    f"registry {self.ref.registry} stored the manifest as {announced}, not {digest}: "
                    "it rewrote what banger sent"
                )
        return digest


def _same_origin(url: httpx.URL, base: httpx.URL) -> bool:
    return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)


def _error_detail(response: httpx.Response) -> str:
    """``: CODE message`` from a distribution error body (``{"errors": [...]}``), if it has one."""
    try:
        response.read()
        errors = response.json().get("errors")
        first = errors[0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()[:200]
    except (ValueError, AttributeError, IndexError, KeyError, TypeError, httpx.HTTPError):
        return ""
