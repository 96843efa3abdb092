"""A registry with token auth (ES256 JWTs from a loopback token server) and credentials from config.json."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress
from banger_oci.auth import AuthError, find_credentials
from banger_oci.blobs import BlobCache
from banger_oci.reference import parse_reference
from banger_oci.registry import RegistryClient
from plugins.oci.tests.registry_lab import ImageSpec, LayerBlob, Registry, TokenServer, make_layer, write_layout

pytestmark = pytest.mark.integration

USER, PASSWORD = "tester", "s3cret-Pa55"


@dataclass
class SecureRegistry:
    registry: Registry
    tokens: TokenServer
    layer: LayerBlob
    ref: str


@pytest.fixture(params=[False], ids=["private"])
def secure(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SecureRegistry]:
    tokens = TokenServer(tmp_path, USER, PASSWORD, anonymous_pull=request.param)
    try:
        registry = Registry(tmp_path / "registry", tokens.registry_auth_yaml())
        try:
            layer = make_layer({"etc/secret": b"x"}, "zstd")
            layout = write_layout(tmp_path / "layout", "v1", [ImageSpec([layer])])
            ref = registry.push(layout, "team/secure", creds=f"{USER}:{PASSWORD}")
            yield SecureRegistry(registry, tokens, layer, ref)
        finally:
            registry.stop()
    finally:
        tokens.stop()


def docker_config(path: Path, registry: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return path


def pull_layers(ref: str, auth_file: Path, cache: BlobCache) -> list[Path]:
    reference = parse_reference(ref)
    with RegistryClient(reference, find_credentials(reference.registry, auth_file)) as client, cache.locked():
        resolved = client.resolve(RecordingProgress())
        return [cache.fetch(blob, client, RecordingProgress(), "layer") for blob in resolved.layers]


def test_right_credentials_from_docker_config_get_a_token(secure: SecureRegistry, tmp_path: Path) -> None:
    config = docker_config(tmp_path / "config.json", f"http://{secure.registry.host}", USER, PASSWORD)
    secure.tokens.requests.clear()
    paths = pull_layers(secure.ref, config, BlobCache(tmp_path / "cache", 1 << 30))
    assert [p.read_bytes() for p in paths] == [secure.layer.data]
    assert secure.tokens.requests == [{"scope": ["repository:team/secure:pull"], "service": [TokenServer.SERVICE]}], (
        "one token, asked with the challenge's service and scope"
    )


@pytest.mark.parametrize(("user", "password"), [(USER, "Wr0ng-pa55-xyz"), ("nobody", PASSWORD)])
def test_wrong_credentials_are_refused_in_one_line(
    secure: SecureRegistry, tmp_path: Path, user: str, password: str
) -> None:
    config = docker_config(tmp_path / "config.json", secure.registry.host, user, password)
    cache = BlobCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(AuthError) as caught:
        pull_layers(secure.ref, config, cache)
    assert str(caught.value) == (
        f"registry {secure.registry.host} refused the credentials of {config} entry '{secure.registry.host}' "
        f"for {secure.registry.host}/team/secure: check the user name and password"
    )
    assert password not in str(caught.value)
    assert cache.usage() == 0


def test_no_credentials_says_how_to_get_them(secure: SecureRegistry, tmp_path: Path) -> None:
    with pytest.raises(AuthError, match=f"registry {secure.registry.host} wants credentials for .*`docker login`"):
        pull_layers(secure.ref, tmp_path / "no-config.json", BlobCache(tmp_path / "cache", 1 << 30))


@pytest.mark.parametrize("secure", [True], ids=["anonymous-pull"], indirect=True)
def test_anonymous_tokens_like_docker_hub(secure: SecureRegistry, tmp_path: Path) -> None:
    secure.tokens.requests.clear()
    secure.tokens.authorized.clear()
    paths = pull_layers(secure.ref, tmp_path / "no-config.json", BlobCache(tmp_path / "cache", 1 << 30))
    assert [p.read_bytes() for p in paths] == [secure.layer.data]
    assert secure.tokens.authorized == [False], "no credentials were sent, one anonymous token was asked for"
