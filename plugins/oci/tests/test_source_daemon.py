"""Through the real daemon and CLI: a pull refused by the oci source leaves nothing in the store or the cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.testing import invoke_cli
from plugins.oci.tests.registry_lab import ImageSpec, Registry, make_layer, write_layout
from tests.support.daemon import DaemonHarness

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(banger_env: dict[str, str]) -> Iterator[DaemonHarness]:
    daemon = DaemonHarness(dict(banger_env))
    try:
        yield daemon
    finally:
        daemon.stop()


def test_a_tampered_layer_is_refused_in_one_line_and_nothing_stays(harness: DaemonHarness, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    try:
        image = ImageSpec(
            [make_layer({"etc/os-release": b"ID=x\n"}, "gzip"), make_layer({"srv/a": b"a" * 4000}, "zstd")]
        )
        ref = registry.push(write_layout(tmp_path / "layout", "v1", [image]), "team/base")
        stored = registry.blob_file(image.layers[1].digest)
        stored.write_bytes(stored.read_bytes()[:-1] + b"\0")

        result = invoke_cli(["image", "pull", ref], harness.env)
    finally:
        registry.stop()

    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if "Error" in line or "error" in line]
    assert len(lines) == 1, result.output
    assert f"image source oci failed to get {ref}: BlobError: layer 2/2" in lines[0]
    assert "refused as corrupt or tampered, nothing was kept" in lines[0]
    assert "Traceback" not in result.output
    assert harness.client().images.list() == []
    images = harness.state / "images"
    assert not images.exists() or list(images.iterdir()) == []
    cache = Path(harness.env["XDG_CACHE_HOME"]) / "banger" / "plugins" / "oci" / "blobs"
    assert not (cache / "sha256" / image.layers[1].digest[7:]).exists()
    assert list((cache / "partial").iterdir()) == []


def test_an_image_without_sshd_says_so_and_with_sshd_reaches_the_oci_source(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    """The refusal is one line naming both ways; --with-sshd travels CLI -> daemon -> oci -> bootable."""
    registry = Registry(tmp_path / "registry")
    try:
        image = ImageSpec([make_layer({"sbin/init": b"init", "etc/os-release": b"ID=x\n"}, "gzip")])
        ref = registry.push(write_layout(tmp_path / "layout", "v1", [image]), "team/nossh")
        plain = invoke_cli(["image", "pull", ref], harness.env)
        # No package manager in this image: the --with-sshd refusal comes from the oci source's first-boot step.
        with_sshd = invoke_cli(["image", "pull", "--with-sshd", ref], harness.env)
    finally:
        registry.stop()

    for result, says in [
        (plain, "the image has no openssh-server (/usr/sbin/sshd) and banger reaches its VMs over ssh: "
                "pull it with --with-sshd"),
        (with_sshd, "--with-sshd: the image has no package manager banger knows (apt-get, apk, dnf)"),
    ]:  # fmt: skip
        assert result.exit_code != 0
        lines = [line for line in result.output.splitlines() if "error" in line]
        assert len(lines) == 1 and says in lines[0] and "docs/oci-import.md#images-without-sshd" in lines[0], (
            result.output
        )
    assert harness.client().images.list() == []
