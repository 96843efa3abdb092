"""``banger image push`` / ``kernel push`` through the real daemon and CLI, against a real docker-registry on 127.0.0.1.

The round trips of issue 12: push → delete → pull gives back the same rootfs
(and the same kernel files), bit for bit; bad pushes and tampered artifacts
are refused in one line with the store left as it was.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from banger_core.testing import invoke_cli
from banger_oci.artifact import ARTIFACT_TYPES, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPES
from plugins.oci.tests.registry_lab import Registry, TokenServer, file_sha256
from tests.support.daemon import DaemonHarness

pytestmark = pytest.mark.integration

USER, PASSWORD = "pusher", "Pu5h-s3cret"


def manifest_of(registry: Registry, repo: str, tag: str) -> tuple[str, dict[str, object]]:
    response = httpx.get(
        f"http://{registry.host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    response.raise_for_status()
    return response.headers["docker-content-digest"], response.json()


def cli_ok(args: list[str], env: dict[str, str]) -> list[str]:
    result = invoke_cli(args, env)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def one_error_line(args: list[str], env: dict[str, str]) -> str:
    result = invoke_cli(args, env)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("banger: error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_image_push_delete_pull_gives_back_the_same_rootfs(daemon: DaemonHarness, registry: Registry) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    before = client.images.get("fake-tiny")
    rootfs_sha = file_sha256(Path(before.path))
    assert rootfs_sha == before.sha256
    target = f"{registry.host}/team/golden:v1"

    lines = cli_ok(["image", "push", "fake-tiny", target], daemon.env)

    digest, manifest = manifest_of(registry, "team/golden", "v1")
    assert lines[-1] == f"{registry.host}/team/golden@{digest}", "the pinned reference is printed last"
    assert lines[-2].startswith(f"image fake-tiny pushed to {target} (bundle ")
    assert manifest["artifactType"] == ARTIFACT_TYPES["image"]
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE  # type: ignore[index]
    [layer] = manifest["layers"]  # type: ignore[misc]
    assert layer["mediaType"] == LAYER_MEDIA_TYPES["image"]
    annotations = manifest["annotations"]
    assert annotations["dev.banger.name"] == "fake-tiny"  # type: ignore[index]
    assert annotations["dev.banger.kernel_ref"] == "fake-kernel"  # type: ignore[index]
    assert annotations["dev.banger.rootfs_ext4.sha256"] == rootfs_sha  # type: ignore[index]
    assert annotations["org.opencontainers.image.created"]  # type: ignore[index]

    again = json.loads("".join(cli_ok(["image", "push", "fake-tiny", target, "--json"], daemon.env)))
    assert again["uploaded"] == 0, "blobs the registry holds are not sent again"
    assert (again["digest"], again["publisher"], again["kind"]) == (digest, "oci", "image")

    cli_ok(["image", "delete", "fake-tiny"], daemon.env)
    assert client.images.list() == []
    pinned = lines[-1]
    pulled = cli_ok(["image", "pull", pinned], daemon.env)

    assert pulled[-1].startswith("fake-tiny: from oci"), pulled
    after = client.images.get("fake-tiny")
    assert after.sha256 == rootfs_sha
    assert file_sha256(Path(after.path)) == rootfs_sha, "the rootfs is bit for bit the one pushed"
    assert after.source == "oci" and after.kernel_ref == "fake-kernel"
    assert after.meta["manifest_digest"] == digest
    assert after.meta["origin"] == pinned
    cache = Path(daemon.env["XDG_CACHE_HOME"]) / "banger" / "plugins" / "oci" / "blobs" / "sha256"
    assert list(cache.iterdir()) == [], "the bundle is unpacked into the store, not kept twice"

    # Stored under its published name, not the reference's: a second pull of the tag still finds it.
    # (The pinned pull stored it: the tag is another reference, so replacing that image takes --force.)
    by_tag = client.images.pull(target, force=True)
    assert by_tag.name == "fake-tiny" and by_tag.pulled is True
    again_by_tag = client.images.pull(target)
    assert (again_by_tag.name, again_by_tag.pulled) == ("fake-tiny", False), "already present, by its reference"


def test_kernel_push_delete_pull_gives_back_the_same_files(daemon: DaemonHarness, registry: Registry) -> None:
    client = daemon.client()
    client.kernels.pull("fake-kernel")
    [kernel] = client.kernels.list()
    files = {name: file_sha256(Path(kernel.path) / name) for name in ("vmlinux", "initrd")}
    target = f"{registry.host}/team/kernel:6.1"

    lines = cli_ok(["kernel", "push", "fake-kernel", target], daemon.env)

    digest, manifest = manifest_of(registry, "team/kernel", "6.1")
    assert lines[-1] == f"{registry.host}/team/kernel@{digest}"
    assert manifest["artifactType"] == ARTIFACT_TYPES["kernel"]
    assert manifest["layers"][0]["mediaType"] == LAYER_MEDIA_TYPES["kernel"]  # type: ignore[index]
    assert manifest["annotations"]["dev.banger.vmlinux.sha256"] == files["vmlinux"]  # type: ignore[index]

    cli_ok(["kernel", "delete", "fake-kernel"], daemon.env)
    assert client.kernels.list() == []
    pulled = cli_ok(["kernel", "pull", target], daemon.env)

    assert pulled[-1].startswith("fake-kernel: from oci"), pulled
    [back] = client.kernels.list()
    assert back.ref == "fake-kernel" and back.provider == "oci"
    assert {name: file_sha256(Path(back.path) / name) for name in files} == files
    assert back.sha256 == files


def test_a_kernel_pull_of_an_image_artifact_is_refused_in_one_line(daemon: DaemonHarness, registry: Registry) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    client.images.push("fake-tiny", f"{registry.host}/team/golden:v1")

    error = one_error_line(["kernel", "pull", f"{registry.host}/team/golden:v1"], daemon.env)

    assert "is a banger image artifact, not a kernel: use `banger image pull`" in error
    assert [k.ref for k in client.kernels.list()] == ["fake-kernel"]


def test_a_tampered_bundle_is_refused_and_nothing_stays_in_the_store(daemon: DaemonHarness, registry: Registry) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    pushed = client.images.push("fake-tiny", f"{registry.host}/team/golden:v1")
    _, manifest = manifest_of(registry, "team/golden", "v1")
    bundle_digest = manifest["layers"][0]["digest"]  # type: ignore[index]
    stored = registry.blob_file(bundle_digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    client.images.delete("fake-tiny")

    error = one_error_line(["image", "pull", pushed.reference], daemon.env)

    assert f"image source oci failed to get {pushed.reference}: BlobError: bundle {bundle_digest[:19]}" in error
    assert "refused as corrupt or tampered, nothing was kept" in error
    assert client.images.list() == []
    assert [entry.name for entry in (daemon.state / "images").iterdir()] == []
    cache = Path(daemon.env["XDG_CACHE_HOME"]) / "banger" / "plugins" / "oci" / "blobs"
    assert not (cache / "sha256" / bundle_digest[7:]).exists()
    assert list((cache / "partial").iterdir()) == []


def test_pushing_what_the_store_does_not_hold_is_one_line(daemon: DaemonHarness, registry: Registry) -> None:
    image = one_error_line(["image", "push", "nope", f"{registry.host}/team/nope:v1"], daemon.env)
    kernel = one_error_line(["kernel", "push", "nope", f"{registry.host}/team/nope:v1"], daemon.env)

    assert image == "banger: error: image 'nope' is not pulled: run `banger image pull nope`"
    assert kernel == "banger: error: kernel 'nope' is not pulled: run `banger kernel pull nope`"
    assert httpx.get(f"http://{registry.host}/v2/_catalog").json() == {"repositories": []}


def test_a_target_that_is_no_registry_reference_is_one_line(daemon: DaemonHarness) -> None:
    daemon.client().images.pull("fake-tiny")

    error = one_error_line(["image", "push", "fake-tiny", "elsewhere"], daemon.env)

    assert error.startswith("banger: error: no artifact publisher understands 'elsewhere' (asked: oci): ")


def test_a_digest_target_is_refused_in_one_line(daemon: DaemonHarness, registry: Registry) -> None:
    daemon.client().images.pull("fake-tiny")

    error = one_error_line(["image", "push", "fake-tiny", f"{registry.host}/team/x@sha256:{'a' * 64}"], daemon.env)

    assert "push to a tag (REGISTRY/REPO:TAG); the digest is what the push answers with" in error


@pytest.fixture
def secure_registry(tmp_path: Path) -> Iterator[Registry]:
    tokens = TokenServer(tmp_path, USER, PASSWORD)
    try:
        server = Registry(tmp_path / "secure", tokens.registry_auth_yaml())
        try:
            yield server
        finally:
            server.stop()
    finally:
        tokens.stop()


def use_credentials(daemon: DaemonHarness, registry: Registry, user: str, password: str) -> None:
    docker = Path(daemon.env["HOME"]) / ".docker"
    docker.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))


def test_push_to_a_token_registry_with_wrong_credentials_is_one_line(
    daemon: DaemonHarness, secure_registry: Registry
) -> None:
    daemon.client().images.pull("fake-tiny")
    use_credentials(daemon, secure_registry, USER, "Wr0ng-pa55")
    target = f"{secure_registry.host}/team/golden:v1"

    error = one_error_line(["image", "push", "fake-tiny", target], daemon.env)

    prefix = f"banger: error: cannot push image fake-tiny to {target}: registry {secure_registry.host} refused"
    assert error.startswith(prefix), error
    assert "check the user name and password" in error
    assert "Wr0ng-pa55" not in error


def test_push_and_pull_with_the_right_credentials_of_a_token_registry(
    daemon: DaemonHarness, secure_registry: Registry
) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    sha = client.images.get("fake-tiny").sha256
    use_credentials(daemon, secure_registry, USER, PASSWORD)

    pushed = client.images.push("fake-tiny", f"{secure_registry.host}/team/golden:v1")
    client.images.delete("fake-tiny")
    client.images.pull(pushed.reference)

    assert client.images.get("fake-tiny").sha256 == sha


def test_an_image_pull_of_a_kernel_artifact_is_refused_in_one_line(daemon: DaemonHarness, registry: Registry) -> None:
    client = daemon.client()
    client.kernels.pull("fake-kernel")
    pushed = client.kernels.push("fake-kernel", f"{registry.host}/team/kernel:v1")

    error = one_error_line(["image", "pull", pushed.reference], daemon.env)

    assert f"{pushed.reference} is a banger kernel artifact, not an image: use `banger kernel pull`" in error
    assert client.images.list() == []
