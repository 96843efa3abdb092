"""A pull from a real registry through the real flattener: the ext4 read back with debugfs (no stand-in)."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from banger_core.testing import RecordingProgress, make_plugin_context
from banger_oci.source import OciImageSource
from plugins.oci.tests.registry_lab import (
    LAYER_GZIP,
    LAYER_TAR,
    LAYER_ZSTD,
    ImageSpec,
    LayerBlob,
    Registry,
    digest_of,
    make_layer,
    write_layout,
)

pytestmark = pytest.mark.integration


def layer(entries: list[tuple[str, bytes, int, int, int]], compression: str) -> LayerBlob:
    """A layer of regular files given as (name, content, mode, uid, gid)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    if compression == "gzip":
        return LayerBlob(gzip.compress(plain, mtime=0), LAYER_GZIP, digest_of(plain))
    if compression == "zstd":
        return LayerBlob(zstandard.ZstdCompressor().compress(plain), LAYER_ZSTD, digest_of(plain))
    return LayerBlob(plain, LAYER_TAR, digest_of(plain))


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True).stdout


def test_pull_builds_a_bootable_ext4_from_gzip_zstd_and_plain_layers(
    registry: Registry, banger_env: dict[str, str], tmp_path: Path
) -> None:
    base = layer(
        [
            ("sbin/init", b"#!/bin/sh\n", 0o755, 0, 0),
            ("usr/sbin/sshd", b"sshd\n", 0o755, 0, 0),
            ("etc/gone", b"removed by a whiteout\n", 0o644, 0, 0),
            ("home/dev/notes", b"owned by 1000:42\n", 0o640, 1000, 42),
        ],
        "gzip",
    )
    middle = layer([("usr/bin/passwd", b"setuid\n", 0o4755, 0, 0)], "zstd")
    top = layer([("etc/.wh.gone", b"", 0o644, 0, 0), ("srv/plain", b"plain\n", 0o644, 0, 0)], "tar")
    amd = ImageSpec([base, middle, top])
    layout = write_layout(
        tmp_path / "layout", "v1", [ImageSpec([make_layer({"arm": b"1"})], "arm64"), amd], as_index=True
    )
    ref = registry.push(layout, "team/base", all_images=True)
    dest = tmp_path / "dest"
    dest.mkdir()

    artifact = OciImageSource(make_plugin_context(banger_env)).pull(ref, dest, RecordingProgress())

    image = artifact.rootfs
    assert artifact.metadata["manifest_digest"] == layout.manifests["amd64"]
    assert artifact.sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
    assert subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode == 0
    assert debugfs(image, "cat /srv/plain") == "plain\n"
    assert "User:  1000   Group:    42" in debugfs(image, "stat /home/dev/notes")
    assert "Mode:  04755" in debugfs(image, "stat /usr/bin/passwd")
    assert (
        "File not found"
        in subprocess.run(["debugfs", "-R", "stat /etc/gone", str(image)], capture_output=True, text=True).stderr
    )
    assert debugfs(image, "cat /etc/fstab") == ""
