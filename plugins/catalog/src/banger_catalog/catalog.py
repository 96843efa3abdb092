"""``catalog.json``: which images and kernels exist as bundles, where, and with which digest.

The embedded catalog ships inside this package; config ``catalog_url`` replaces
it with a local file or an http(s) URL. Format 1::

    {"format": 1,
     "entries": [{"name": "debian-bookworm", "kind": "image", "description": "...",
                  "url": "https://.../debian-bookworm.tar.zst",
                  "sha256": "<64 hex>", "size": 123456789, "kernel_ref": "generic-6.1"}]}

Every bundle is signed with Sigstore: its signature (a Sigstore bundle,
JSON) is published beside it at ``url + ".sigstore.json"``, and the catalog
names who must have signed it, for the whole catalog and/or per entry (an
entry's own ``signing`` wins)::

    {"format": 1,
     "signing": {"identity": "https://github.com/banger-dev/banger/.github/workflows/release.yml@refs/heads/main",
                 "issuer": "https://token.actions.githubusercontent.com"},
     "entries": [...]}

The driver checks that signature before it unpacks anything (see drivers.py).

An entry whose ``sha256`` and ``size`` are both ``null`` is *not published
yet*: it is listed (so its name is known) but cannot be pulled. Entries of an
unknown ``kind`` are skipped so that older clients can read newer catalogs.
Relative ``url`` values are resolved against the catalog's own location.

An entry's ``url`` may instead name an OCI artifact that ``banger image push``
(or ``kernel push``) published, pinned by its manifest digest:
``"url": "oci://ghcr.io/team/golden@sha256:<64 hex>"`` (no ``sha256``/``size``:
the digest in the reference pins it). Pulling that name pulls the artifact
through the ``oci`` provider, which checks every digest, and keeps it only if it
holds the image (or kernel) of that name.

``catalog_url`` itself may name a catalog stored in a registry:
``oci://REGISTRY/REPO@sha256:<64 hex>`` (or ``:TAG``, which trusts whoever can
move the tag: pin the digest ``scripts/publish_catalog.py --registry`` prints).
That artifact's ``artifactType`` is :data:`CATALOG_ARTIFACT_TYPE` and its one
layer, of :data:`CATALOG_MEDIA_TYPE`, is the catalog.json. This plugin cannot
import the ``oci`` plugin: it asks ``ctx.fetch_document``, which the daemon routes
to the artifact publisher claiming the reference, and which checks every digest
and the size. Relative entry URLs are refused in such a catalog.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from banger_catalog.errors import CatalogError
from banger_hookspecs import DocumentFetcher, DocumentRefused, SourceUnavailable
from banger_hookspecs.bundle import PAYLOAD_FILES, SHA256_RE, BundleKind
from banger_hookspecs.names import IMAGE_NAME_RULE, is_image_name

CATALOG_FORMAT = 1
#: A catalog larger than this is refused (it is a list of a few dozen entries).
CATALOG_LIMIT = 4 << 20
#: A bundle larger than this cannot be listed (a rootfs bundle is a few hundred MB).
MAX_BUNDLE_SIZE = 64 << 30
EMBEDDED = "the embedded catalog"
_URL_SCHEMES = ("http", "https", "file")
#: ``oci://REGISTRY/REPO[:TAG]@sha256:HEX``: the oci provider parses the rest; a catalog pins by digest.
OCI_SCHEME = "oci://"
#: ``catalog_url = "oci://REGISTRY/REPO:TAG"`` or ``...@sha256:HEX``: a catalog stored in a registry.
_OCI_CATALOG_RE = re.compile(
    r"oci://[A-Za-z0-9.\-\[\]:]+/[a-z0-9._/\-]+(?::[A-Za-z0-9_.\-]{1,128})?(?:@sha256:[0-9a-f]{64})?"
)
#: ``artifactType`` of a catalog published to a registry (``scripts/publish_catalog.py --registry``).
CATALOG_ARTIFACT_TYPE = "application/vnd.banger.catalog.v1"
#: Media type of its one layer: the catalog.json.
CATALOG_MEDIA_TYPE = "application/vnd.banger.catalog.v1+json"
#: The Sigstore bundle of a bundle at URL is published at URL + this.
SIGNATURE_SUFFIX = ".sigstore.json"
#: An identity or issuer longer than this is refused (a workflow URL is ~100 characters).
_SIGNING_FIELD_LIMIT = 1024
_OCI_URL_RE = re.compile(r"oci://[A-Za-z0-9.\-\[\]:]+/[a-z0-9._/\-]+(?::[A-Za-z0-9_.\-]{1,128})?@sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class SigningPolicy:
    """Who must have signed a bundle: the signing certificate's identity and the OIDC issuer that vouched for it.

    Attributes:
        identity: the certificate's identity (SAN), e.g. a release workflow's URL at a ref.
        issuer: the OIDC issuer, e.g. ``https://token.actions.githubusercontent.com``.
    """

    identity: str
    issuer: str


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable bundle.

    Attributes:
        name: image name or kernel ref.
        kind: ``image`` or ``kernel``.
        description: one line for listings.
        url: absolute URL of the bundle (``http``, ``https`` or ``file``), or ``oci://`` and
            the reference of the OCI artifact holding it, pinned by digest.
        sha256: hex digest of the bundle file, or None when not published yet (or an OCI artifact).
        size: size of the bundle file in bytes, or None when not published yet (or an OCI artifact).
        kernel_ref: for images, the kernel the image wants.
        signing: who must have signed the bundle (the entry's ``signing``, else the catalog's),
            None when the catalog names nobody: then the bundle counts as unsigned.
    """

    name: str
    kind: BundleKind
    description: str
    url: str
    sha256: str | None
    size: int | None
    kernel_ref: str | None = None
    signing: SigningPolicy | None = None

    @property
    def signature_url(self) -> str:
        """Where the bundle's Sigstore bundle is published: beside it, named ``<bundle>.sigstore.json``."""
        return self.url + SIGNATURE_SUFFIX

    @property
    def oci_reference(self) -> str | None:
        """The pinned registry reference when the bundle is an OCI artifact (``url`` is ``oci://...``)."""
        return self.url.removeprefix(OCI_SCHEME) if self.url.startswith(OCI_SCHEME) else None

    @property
    def published(self) -> bool:
        """False for a placeholder entry whose bundle has not been released yet."""
        return self.sha256 is not None or self.oci_reference is not None


@dataclass(frozen=True)
class Catalog:
    """A parsed catalog and where it came from."""

    location: str
    entries: tuple[CatalogEntry, ...]

    def find(self, kind: str, name: str) -> CatalogEntry | None:
        """The entry of ``kind`` named ``name``, if listed."""
        for entry in self.entries:
            if entry.kind == kind and entry.name == name:
                return entry
        return None


def load_catalog(
    catalog_url: str | None, *, timeout: float = 30.0, fetch_document: DocumentFetcher | None = None
) -> Catalog:
    """Load the catalog named by config ``catalog_url``, or the embedded one when unset.

    Args:
        catalog_url: an http(s) URL, a ``file://`` URL, an absolute path (``~``
            allowed), ``oci://REGISTRY/REPO@sha256:...`` (or ``:TAG``), or None/empty
            for the embedded catalog.
        timeout: seconds for each network operation.
        fetch_document: the plugin context's, for an ``oci://`` catalog_url.

    Returns:
        The catalog.

    Raises:
        SourceUnavailable: the catalog cannot be fetched or read (so the core may fall back).
        CatalogError: the catalog was fetched but is malformed.
    """
    if not catalog_url:
        raw = resources.files("banger_catalog").joinpath("catalog.json").read_bytes()
        return parse_catalog(raw, EMBEDDED, base=None)
    if catalog_url.startswith(OCI_SCHEME):
        return _load_oci_catalog(catalog_url, fetch_document)
    scheme = urlsplit(catalog_url).scheme
    if scheme in ("http", "https"):
        return parse_catalog(_fetch(catalog_url, timeout), f"catalog {catalog_url}", base=catalog_url)
    if scheme == "file":
        path = Path(urlsplit(catalog_url).path)
    elif scheme == "":
        path = Path(os.path.expanduser(catalog_url))
    else:
        raise CatalogError(
            f"catalog_url {catalog_url!r} is neither an http(s) URL, an oci:// reference nor a path: "
            "fix it in config.toml"
        )
    if not path.is_absolute():
        raise CatalogError(f"catalog_url {catalog_url!r} is a relative path: use an absolute path or a URL")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(CATALOG_LIMIT + 1)
    except OSError as exc:
        raise SourceUnavailable(f"catalog file {path} cannot be read ({exc.strerror}): fix catalog_url") from None
    return parse_catalog(raw, f"catalog {path}", base=path.as_uri())


def _load_oci_catalog(catalog_url: str, fetch_document: DocumentFetcher | None) -> Catalog:
    if not _OCI_CATALOG_RE.fullmatch(catalog_url):
        raise CatalogError(
            f"catalog_url {catalog_url!r} is not oci://REGISTRY/REPO@sha256:<64 hex> (or :TAG): "
            "use the reference scripts/publish_catalog.py --registry printed"
        )
    if fetch_document is None:
        raise SourceUnavailable(f"catalog {catalog_url} can be read only by the daemon")
    try:
        document = fetch_document(
            catalog_url.removeprefix(OCI_SCHEME),
            artifact_type=CATALOG_ARTIFACT_TYPE,
            media_type=CATALOG_MEDIA_TYPE,
            max_size=CATALOG_LIMIT,
        )
    except SourceUnavailable as exc:
        raise SourceUnavailable(f"catalog {catalog_url} cannot be loaded: {exc}") from None
    except DocumentRefused as exc:
        raise CatalogError(f"catalog {catalog_url} is not a banger catalog: {exc}") from None
    return parse_catalog(document.data, f"catalog {OCI_SCHEME}{document.reference}", base=None)


def system_trust() -> ssl.SSLContext:
    """The host's trust store (OpenSSL's default paths, ``SSL_CERT_FILE``/``SSL_CERT_DIR``), not certifi's.

    A TLS-intercepting proxy's CA is installed there, so whatever curl and apt trust, banger trusts.
    """
    return ssl.create_default_context()


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True, verify=system_trust()) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise SourceUnavailable(f"catalog {url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > CATALOG_LIMIT:
                    raise CatalogError(f"catalog {url} is larger than {CATALOG_LIMIT} bytes: check catalog_url")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"catalog {url} is unreachable ({_one_line(exc)})") from None


def parse_catalog(raw: bytes, location: str, *, base: str | None) -> Catalog:
    """Validate catalog bytes.

    Args:
        raw: the catalog.json content.
        location: where it came from, for messages (``"catalog /etc/banger/catalog.json"``).
        base: URL relative entry URLs are resolved against (None: they are errors).

    Returns:
        The catalog.

    Raises:
        CatalogError: the catalog is malformed.
    """
    if len(raw) > CATALOG_LIMIT:
        raise CatalogError(f"{location} is larger than {CATALOG_LIMIT} bytes: it is not a banger catalog")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CatalogError(f"{location} is not valid JSON: it is not a banger catalog") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise CatalogError(f"{location} has no 'entries' list: it is not a banger catalog")
    if data.get("format") != CATALOG_FORMAT:
        raise CatalogError(
            f"{location} is catalog format {data.get('format')!r}, this banger reads format {CATALOG_FORMAT}: "
            "upgrade banger or point catalog_url at a format-1 catalog"
        )
    signing = _parse_signing(data.get("signing"), location)
    entries: list[CatalogEntry] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(data["entries"]):
        where = f"{location} entry {index + 1}"
        if not isinstance(item, dict):
            raise CatalogError(f"{where} is not an object")
        if item.get("kind") not in PAYLOAD_FILES:
            continue  # a kind added by a newer banger
        entry = _parse_entry(item, where, base, signing)
        if (entry.kind, entry.name) in seen:
            raise CatalogError(f"{where} lists {entry.kind} {entry.name!r} a second time: remove one")
        seen.add((entry.kind, entry.name))
        entries.append(entry)
    return Catalog(location=location, entries=tuple(entries))


def _parse_signing(value: object, where: str) -> SigningPolicy | None:
    """A ``signing`` object (``{"identity": ..., "issuer": ...}``), or None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CatalogError(f"{where} has a 'signing' that is not an object: {_SIGNING_FIX}")
    issuer = _signing_field(value, "issuer", where)
    if not issuer.startswith("https://"):
        raise CatalogError(f"{where} has a signing issuer {issuer!r} that is not an https:// URL: {_SIGNING_FIX}")
    return SigningPolicy(identity=_signing_field(value, "identity", where), issuer=issuer)


_SIGNING_FIX = 'give "signing": {"identity": "<certificate identity>", "issuer": "https://<OIDC issuer>"}'


def _signing_field(signing: Mapping[str, object], key: str, where: str) -> str:
    value = signing.get(key)
    if not isinstance(value, str) or not value or len(value) > _SIGNING_FIELD_LIMIT or any(c.isspace() for c in value):
        raise CatalogError(f"{where} has an invalid signing {key} {value!r}: {_SIGNING_FIX}")
    return value


def _parse_entry(
    item: Mapping[str, object], where: str, base: str | None, catalog_signing: SigningPolicy | None
) -> CatalogEntry:
    name = item.get("name")
    if not is_image_name(name):
        raise CatalogError(f"{where} has an invalid name {name!r}: {IMAGE_NAME_RULE}")
    where = f"{where} ({name})"
    description = item.get("description", "")
    if not isinstance(description, str) or len(description) > 200 or "\n" in description:
        raise CatalogError(f"{where} needs a one-line description of at most 200 characters")
    sha256, size = item.get("sha256"), item.get("size")
    if (sha256 is None) != (size is None):
        raise CatalogError(f"{where} must give both sha256 and size, or neither (not published yet)")
    if sha256 is not None and not (isinstance(sha256, str) and SHA256_RE.fullmatch(sha256)):
        raise CatalogError(f"{where} has an invalid sha256: use 64 lowercase hex digits")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_BUNDLE_SIZE):
        raise CatalogError(f"{where} has an invalid size: use the bundle's size in bytes")
    kernel_ref = item.get("kernel_ref")
    if kernel_ref is not None and not is_image_name(kernel_ref):
        raise CatalogError(f"{where} has an invalid kernel_ref {kernel_ref!r}")
    kind: BundleKind = "image" if item.get("kind") == "image" else "kernel"  # the caller skipped other kinds
    url = _resolve_url(item.get("url"), where, base)
    if url.startswith(OCI_SCHEME) and sha256 is not None:
        raise CatalogError(f"{where} names an OCI artifact: drop sha256 and size, its reference's digest pins it")
    return CatalogEntry(
        name=name,
        kind=kind,
        description=description,
        url=url,
        sha256=sha256,
        size=size,
        kernel_ref=kernel_ref if kind == "image" else None,
        signing=_parse_signing(item.get("signing"), where) or catalog_signing,
    )


def _resolve_url(value: object, where: str, base: str | None) -> str:
    if not isinstance(value, str) or not value or len(value) > 2048 or any(c.isspace() for c in value):
        raise CatalogError(f"{where} has an invalid url")
    url: str = value
    if url.startswith(OCI_SCHEME):
        if not _OCI_URL_RE.fullmatch(url):
            raise CatalogError(
                f"{where} has an OCI url that is not oci://REGISTRY/REPO@sha256:<64 hex>: pin the artifact by "
                "the digest `banger image push` printed"
            )
        return url
    if not urlsplit(url).scheme:
        if base is None:
            raise CatalogError(f"{where} has a relative url {url!r}, which only a catalog file or URL may use")
        url = urljoin(base, url)
    parts = urlsplit(url)
    if parts.scheme not in _URL_SCHEMES:
        raise CatalogError(f"{where} has a {parts.scheme!r} url: use https, http or file")
    if parts.scheme == "file" and not (base or "").startswith("file:"):
        raise CatalogError(f"{where} points at a local file, which only a local catalog file may do")
    if parts.scheme != "file" and not parts.hostname:
        raise CatalogError(f"{where} has a url without a host")
    return url


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
