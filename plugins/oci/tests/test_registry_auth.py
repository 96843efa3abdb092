"""Credentials from a Docker config.json, and WWW-Authenticate parsing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from banger_oci.auth import AuthError, Credentials, find_credentials, parse_challenge

pytestmark = pytest.mark.unit


def write_config(path: Path, auths: object) -> Path:
    path.write_text(json.dumps({"auths": auths}))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_credentials_from_the_auth_field(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.json", {"127.0.0.1:5000": {"auth": b64("me:pa:ss")}})
    found = find_credentials("127.0.0.1:5000", config)
    assert found == Credentials("me", "pa:ss", f"{config} entry '127.0.0.1:5000'")
    assert "pa:ss" not in repr(found)


def test_registry_keys_in_every_form_docker_writes(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.json",
        {
            "https://index.docker.io/v1/": {"auth": b64("hub:1")},
            "https://ghcr.io": {"username": "gh", "password": "2"},
            "other.io": {"auth": b64("o:3")},
        },
    )
    assert find_credentials("docker.io", config) == Credentials(
        "hub", "1", f"{config} entry 'https://index.docker.io/v1/'"
    )
    found = find_credentials("ghcr.io", config)
    assert found is not None and (found.username, found.password) == ("gh", "2")
    assert find_credentials("quay.io", config) is None


def test_no_file_means_anonymous(tmp_path: Path) -> None:
    assert find_credentials("ghcr.io", tmp_path / "missing.json") is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "is not a Docker config.json"),
        ('{"auths": []}', "'auths' must be an object"),
        ('{"auths": {"r.io": {"auth": "%%%"}}}', "'auth' is not base64"),
    ],
)
def test_broken_credential_files_are_one_line_without_secrets(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(AuthError, match=says) as caught:
        find_credentials("r.io", path)
    assert "\n" not in str(caught.value)


def test_bearer_challenge_parameters() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull",error="insufficient_scope"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull",
        "error": "insufficient_scope",
    }
    assert parse_challenge('Basic realm="Registry Realm"').params == {"realm": "Registry Realm"}
    assert parse_challenge("").scheme == ""
