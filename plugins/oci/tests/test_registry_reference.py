"""Reference parsing with Docker's defaults, the loopback-only HTTP rule, image names, and what oci claims."""

from __future__ import annotations

import pytest

from banger_oci.reference import BadReference, Reference, claims, is_loopback, parse_reference

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine:3.20", Reference("docker.io", "library/alpine", "3.20", None)),
        ("alpine", Reference("docker.io", "library/alpine", "latest", None)),
        ("docker.io/library/alpine:3.20", Reference("docker.io", "library/alpine", "3.20", None)),
        ("index.docker.io/bitnami/redis", Reference("docker.io", "bitnami/redis", "latest", None)),
        ("user/app:v1", Reference("docker.io", "user/app", "v1", None)),
        ("ghcr.io/org/team/app:V1.2_x", Reference("ghcr.io", "org/team/app", "V1.2_x", None)),
        ("localhost/app", Reference("localhost", "app", "latest", None)),
        ("127.0.0.1:5000/team/base:v1", Reference("127.0.0.1:5000", "team/base", "v1", None)),
        (f"127.0.0.1:5000/team/base@{DIGEST}", Reference("127.0.0.1:5000", "team/base", None, DIGEST)),
        (f"quay.io/a/b:tag@{DIGEST}", Reference("quay.io", "a/b", "tag", DIGEST)),
        ("[::1]:5000/app:1", Reference("[::1]:5000", "app", "1", None)),
    ],
)
def test_references_get_the_usual_defaults(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "not an image reference"),
        ("Alpine:3", "must be lowercase"),
        ("alpine:", "tag ''"),
        ("alpine@sha256:abc", "64 lowercase hex"),
        ("alpine@sha512:" + "a" * 128, "digest must be sha256"),
        ("a//b", "must be lowercase"),
        ("../etc/passwd:x", "is not a registry"),
        ("host:port/app", "is not a registry"),
        (" alpine", "not an image reference"),
        ("alpine:3.20\n", "not an image reference"),
    ],
)
def test_bad_references_say_which_rule_they_break(text: str, says: str) -> None:
    with pytest.raises(BadReference, match=says):
        parse_reference(text)


def test_plain_http_only_for_loopback_registries() -> None:
    assert parse_reference("127.0.0.1:5000/a:1").base_url == "http://127.0.0.1:5000/v2/"
    assert parse_reference("localhost:5000/a:1").base_url == "http://localhost:5000/v2/"
    assert parse_reference("[::1]:5000/a:1").base_url == "http://[::1]:5000/v2/"
    assert parse_reference("10.0.0.5:5000/a:1").base_url == "https://10.0.0.5:5000/v2/"
    assert parse_reference("registry.local:5000/a:1").base_url == "https://registry.local:5000/v2/"
    assert parse_reference("alpine:3.20").base_url == "https://registry-1.docker.io/v2/"
    assert is_loopback("127.8.9.10") and not is_loopback("127.example.com")


def test_image_names_are_valid_banger_names() -> None:
    assert parse_reference("alpine:3.20").image_name() == "alpine-3.20"
    assert parse_reference("ghcr.io/o/app-x:V1__z").image_name() == "app-x-v1__z"
    assert parse_reference("ghcr.io/o/app:V1..2").image_name() == "app-v1.2"
    assert parse_reference(f"r.io/team/base:v1@{DIGEST}").image_name() == "base-abababababab"
    assert parse_reference("r.io/" + "a" * 70 + ":x").image_name() == "a" * 64


@pytest.mark.parametrize("text", ["alpine:3.20", "docker.io/alpine", f"base@{DIGEST}", "127.0.0.1:5000/a/b:c"])
def test_oci_claims_references(text: str) -> None:
    assert claims(text)


@pytest.mark.parametrize("text", ["debian-bookworm", "alpine", "generic-6.1", "", "Not A Ref"])
def test_oci_leaves_plain_names_to_the_catalog_and_builders(text: str) -> None:
    assert not claims(text)
