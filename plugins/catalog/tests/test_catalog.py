"""catalog.json parsing: the embedded catalog, entry validation, catalog_url locations."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from banger_catalog.catalog import CATALOG_LIMIT, EMBEDDED, load_catalog, parse_catalog
from banger_catalog.download import download_lock, fetch_bundle
from banger_catalog.errors import CatalogError
from banger_core.testing import RecordingProgress, mint_tls
from banger_hookspecs import FetchedDocument, SourceUnavailable

pytestmark = pytest.mark.unit

RELEASES = "https://github.com/banger-dev/banger/releases/download/"
SHA = "ab" * 32


def _entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "debian-bookworm",
        "kind": "image",
        "description": "Debian 12",
        "url": "https://example.invalid/debian-bookworm.tar.zst",
        "sha256": SHA,
        "size": 1234,
        "kernel_ref": "generic-6.1",
    }
    entry.update(overrides)
    return entry


def _catalog(*entries: dict[str, Any], fmt: int = 1) -> bytes:
    return json.dumps({"format": fmt, "entries": list(entries)}).encode()


def test_embedded_catalog_lists_the_default_images_and_kernel_unpublished() -> None:
    catalog = load_catalog(None)
    assert catalog.location == EMBEDDED
    image = catalog.find("image", "debian-bookworm")
    docker = catalog.find("image", "debian-bookworm-docker")
    kernel = catalog.find("kernel", "generic-6.1")
    assert image is not None and docker is not None and kernel is not None
    assert image.kernel_ref == docker.kernel_ref == "generic-6.1"
    for entry in (image, docker, kernel):
        assert entry.url.startswith(RELEASES), entry.url
        assert entry.url.endswith(f"/{entry.name}.tar.zst")
        # No invented digests: these entries are placeholders until a release publishes them.
        assert (entry.sha256, entry.size, entry.published) == (None, None, False)


def test_published_entry_parses() -> None:
    catalog = parse_catalog(_catalog(_entry()), "test", base=None)
    (entry,) = catalog.entries
    assert (entry.name, entry.kind, entry.sha256, entry.size, entry.published) == (
        "debian-bookworm",
        "image",
        SHA,
        1234,
        True,
    )


PINNED = f"oci://127.0.0.1:5000/team/golden:v1@sha256:{'c' * 64}"


def test_an_entry_naming_a_pinned_oci_artifact_is_published_without_a_bundle_digest() -> None:
    catalog = parse_catalog(_catalog(_entry(url=PINNED, sha256=None, size=None)), "test", base=None)
    [entry] = catalog.entries
    assert entry.published and entry.url == PINNED
    assert entry.oci_reference == PINNED.removeprefix("oci://")
    assert parse_catalog(_catalog(_entry()), "test", base=None).entries[0].oci_reference is None


@pytest.mark.parametrize(
    ("url", "sha256", "message"),
    [
        ("oci://127.0.0.1:5000/team/golden:v1", None, "is not oci://REGISTRY/REPO@sha256:<64 hex>: pin the artifact"),
        (f"oci://ghcr.io/team/golden@sha256:{'C' * 64}", None, "is not oci://REGISTRY/REPO@sha256:<64 hex>"),
        ("oci://ghcr.io@sha256:" + "c" * 64, None, "is not oci://REGISTRY/REPO@sha256:<64 hex>"),
        (PINNED, SHA, "names an OCI artifact: drop sha256 and size, its reference's digest pins it"),
    ],
    ids=["unpinned", "uppercase-digest", "no-repository", "bundle-digest-too"],
)
def test_an_oci_entry_must_be_pinned_by_its_manifest_digest_alone(url: str, sha256: str | None, message: str) -> None:
    size = None if sha256 is None else 1234
    with pytest.raises(CatalogError, match=r"^test entry 1 \(debian-bookworm\) ") as caught:
        parse_catalog(_catalog(_entry(url=url, sha256=sha256, size=size)), "test", base=None)
    assert message in str(caught.value)


def test_find_distinguishes_kinds() -> None:
    catalog = parse_catalog(_catalog(_entry(name="x"), _entry(name="x", kind="kernel")), "test", base=None)
    image, kernel = catalog.find("image", "x"), catalog.find("kernel", "x")
    assert image is not None and kernel is not None
    assert (image.kind, kernel.kind, kernel.kernel_ref) == ("image", "kernel", None)
    assert catalog.find("image", "y") is None


def test_unknown_kinds_and_keys_are_skipped_for_newer_catalogs() -> None:
    raw = _catalog(_entry(kind="firmware"), _entry(future_field=1))
    assert [e.kind for e in parse_catalog(raw, "test", base=None).entries] == ["image"]


def test_relative_urls_resolve_against_the_catalog() -> None:
    raw = _catalog(_entry(url="bundles/debian-bookworm.tar.zst"))
    http = parse_catalog(raw, "test", base="http://127.0.0.1:8080/c/catalog.json")
    assert http.entries[0].url == "http://127.0.0.1:8080/c/bundles/debian-bookworm.tar.zst"
    local = parse_catalog(raw, "test", base="file:///srv/c/catalog.json")
    assert local.entries[0].url == "file:///srv/c/bundles/debian-bookworm.tar.zst"


BAD_CATALOGS: dict[str, tuple[bytes, str]] = {
    "not json": (b"<html>captive portal</html>", "not valid JSON"),
    "no entries": (b'{"format": 1}', "no 'entries' list"),
    "newer format": (_catalog(_entry(), fmt=2), "upgrade banger"),
    "duplicate": (_catalog(_entry(), _entry()), "second time"),
    "bad name": (_catalog(_entry(name="../etc")), "invalid name"),
    "sha without size": (_catalog(_entry(size=None)), "both sha256 and size, or neither"),
    "size without sha": (_catalog(_entry(sha256=None)), "both sha256 and size, or neither"),
    "bad sha": (_catalog(_entry(sha256="ABC")), "invalid sha256"),
    "bad size": (_catalog(_entry(size=-1)), "invalid size"),
    "bool size": (_catalog(_entry(size=True)), "invalid size"),
    "bad kernel_ref": (_catalog(_entry(kernel_ref="a b")), "invalid kernel_ref"),
    "multi-line description": (_catalog(_entry(description="a\nb")), "one-line description"),
    "ftp url": (_catalog(_entry(url="ftp://example.invalid/x")), "'ftp' url"),
    "relative url without base": (_catalog(_entry(url="x.tar.zst")), "relative url"),
    "file url in embedded catalog": (_catalog(_entry(url="file:///etc/shadow")), "local file"),
    "url without host": (_catalog(_entry(url="https:///x")), "without a host"),
}


@pytest.mark.parametrize("case", sorted(BAD_CATALOGS))
def test_malformed_catalog_is_a_clear_error(case: str) -> None:
    raw, match = BAD_CATALOGS[case]
    with pytest.raises(CatalogError, match=match) as info:
        parse_catalog(raw, "catalog test.json", base=None)
    assert "\n" not in str(info.value)


def test_file_url_from_a_remote_catalog_is_refused() -> None:
    with pytest.raises(CatalogError, match="local file"):
        parse_catalog(_catalog(_entry(url="file:///etc/shadow")), "test", base="https://example.invalid/c.json")


def test_catalog_file_by_path_and_by_file_url(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_bytes(_catalog(_entry(url="b.tar.zst")))
    for location in (str(path), path.as_uri()):
        catalog = load_catalog(location)
        assert catalog.location == f"catalog {path}"
        assert catalog.entries[0].url == (tmp_path / "b.tar.zst").as_uri()


def test_missing_catalog_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="cannot be read"):
        load_catalog(str(tmp_path / "nope.json"))


def test_relative_catalog_path_is_a_config_error() -> None:
    with pytest.raises(CatalogError, match="relative path"):
        load_catalog("catalogs/mine.json")


def test_unsupported_catalog_scheme_is_a_config_error() -> None:
    with pytest.raises(CatalogError, match="neither an http"):
        load_catalog("ftp://example.invalid/catalog.json")


def test_oversized_catalog_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (4 << 20) + b"{}")
    with pytest.raises(CatalogError, match="larger than"):
        load_catalog(str(path))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_https_catalog_and_bundle_verified_against_the_system_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Certificates are checked against the host's trust store, which ``SSL_CERT_FILE`` extends here."""
    tls = mint_tls(tmp_path / "tls")
    site = tmp_path / "site"
    site.mkdir()
    bundle = b"pretend bundle bytes" * 100
    (site / "b.tar.zst").write_bytes(bundle)
    entry = _entry(url="b.tar.zst", sha256=hashlib.sha256(bundle).hexdigest(), size=len(bundle))
    (site / "catalog.json").write_bytes(_catalog(entry))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    server.socket = tls.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/catalog.json"
    try:
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
        catalog = load_catalog(url, timeout=10)
        (published,) = catalog.entries
        assert published.url == url.replace("catalog.json", "b.tar.zst")
        with download_lock(tmp_path / "downloads"):
            path = fetch_bundle(published, tmp_path / "downloads", RecordingProgress(), "test", timeout=10)
        assert path.read_bytes() == bundle
        monkeypatch.delenv("SSL_CERT_FILE")  # the test CA is in no store now: refused in one line
        with pytest.raises(SourceUnavailable, match=r"^catalog https://127\.0\.0\.1:\d+/catalog\.json is unreachable"):
            load_catalog(url, timeout=10)
        os.remove(path)
        with (
            download_lock(tmp_path / "downloads"),
            pytest.raises(SourceUnavailable, match=r"^test: cannot download .*CERTIFICATE_VERIFY_FAILED"),
        ):
            fetch_bundle(published, tmp_path / "downloads", RecordingProgress(), "test", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    "url",
    [
        "oci://",
        "oci://ghcr.io",
        "oci://ghcr.io/Team/Catalog:v1",  # repositories are lowercase
        "oci://ghcr.io/team/catalog@sha256:abc",
        "oci://ghcr.io/team/catalog:v1 extra",
    ],
)
def test_a_malformed_oci_catalog_url_is_a_config_error(url: str) -> None:
    fetched: list[str] = []

    def fetch(reference: str, *, artifact_type: str, media_type: str, max_size: int) -> FetchedDocument:
        fetched.append(reference)
        raise AssertionError("a malformed reference must not be fetched")

    with pytest.raises(CatalogError, match=r"is not oci://REGISTRY/REPO@sha256:<64 hex> \(or :TAG\)"):
        load_catalog(url, fetch_document=fetch)
    assert fetched == []


def test_an_oci_catalog_asks_for_the_catalog_artifact_and_refuses_relative_urls() -> None:
    calls: list[tuple[str, str, str, int]] = []
    pinned = "127.0.0.1:5000/team/banger-catalog@sha256:" + "cd" * 32

    def fetch(reference: str, *, artifact_type: str, media_type: str, max_size: int) -> FetchedDocument:
        calls.append((reference, artifact_type, media_type, max_size))
        entries = [_entry(url="bundles/debian-bookworm.tar.zst")]
        return FetchedDocument(data=json.dumps({"format": 1, "entries": entries}).encode(), reference=pinned, digest="")

    with pytest.raises(CatalogError, match=r"relative url 'bundles/debian-bookworm\.tar\.zst'"):
        load_catalog("oci://127.0.0.1:5000/team/banger-catalog:v1", fetch_document=fetch)
    assert calls == [
        (
            "127.0.0.1:5000/team/banger-catalog:v1",
            "application/vnd.banger.catalog.v1",
            "application/vnd.banger.catalog.v1+json",
            CATALOG_LIMIT,
        )
    ]


def test_an_oci_catalog_without_a_fetcher_is_unavailable() -> None:
    with pytest.raises(SourceUnavailable, match="can be read only by the daemon"):
        load_catalog("oci://ghcr.io/team/banger-catalog:v1")
