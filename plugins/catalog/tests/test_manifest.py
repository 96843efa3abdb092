"""Bundle manifest validation (format 1)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from banger_catalog.errors import BundleError
from banger_hookspecs.bundle import MAX_FILE_SIZE
from banger_hookspecs.bundle_reader import parse_manifest

pytestmark = pytest.mark.unit

SHA = "0f" * 32


def _image(**overrides: Any) -> bytes:
    data: dict[str, Any] = {
        "format": 1,
        "kind": "image",
        "name": "debian-bookworm",
        "version": "20250101-abc",
        "kernel_ref": "generic-6.1",
        "created": "2025-01-01T00:00:00Z",
        "files": {"rootfs.ext4": {"sha256": SHA, "size": 1 << 30}},
        "metadata": {"recipe": "r1"},
    }
    data.update(overrides)
    return json.dumps(data).encode()


def _kernel(**overrides: Any) -> bytes:
    data: dict[str, Any] = {
        "format": 1,
        "kind": "kernel",
        "ref": "generic-6.1",
        "version": "6.1.0-37-cloud-amd64",
        "boot_protocol": 1,
        "files": {"vmlinux": {"sha256": SHA, "size": 10}, "initrd": {"sha256": SHA, "size": 5}},
    }
    data.update(overrides)
    return json.dumps(data).encode()


def test_image_manifest() -> None:
    raw = _image()
    manifest = parse_manifest(raw, "image", "test")
    assert (manifest.name, manifest.version, manifest.kernel_ref) == ("debian-bookworm", "20250101-abc", "generic-6.1")
    assert manifest.files["rootfs.ext4"].size == 1 << 30
    assert manifest.payload_size == 1 << 30
    assert manifest.metadata == {"recipe": "r1"}
    assert manifest.raw == raw


def test_kernel_manifest() -> None:
    manifest = parse_manifest(_kernel(), "kernel", "test")
    assert (manifest.name, manifest.boot_protocol, manifest.kernel_ref) == ("generic-6.1", 1, None)
    assert sorted(manifest.files) == ["initrd", "vmlinux"]
    assert manifest.payload_size == 15


def test_image_without_kernel_ref_wants_the_default() -> None:
    assert parse_manifest(_image(kernel_ref=None), "image", "test").kernel_ref is None


BAD: dict[str, tuple[bytes, str, str]] = {
    "not json": (b"\xff\xfe", "image", "not valid JSON"),
    "not an object": (b"[]", "image", "not a JSON object"),
    "format 2": (_image(format=2), "image", "upgrade banger"),
    "wrong kind": (_image(), "kernel", "says kind 'image'"),
    "bad name": (_image(name="../x"), "image", "invalid name"),
    "no version": (_image(version=None), "image", "invalid version"),
    "version with spaces": (_image(version="1 2"), "image", "invalid version"),
    "bad kernel_ref": (_image(kernel_ref="/boot"), "image", "invalid kernel_ref"),
    "no boot_protocol": (_kernel(boot_protocol=None), "kernel", "invalid boot_protocol"),
    "zero boot_protocol": (_kernel(boot_protocol=0), "kernel", "invalid boot_protocol"),
    "missing file": (_kernel(files={"vmlinux": {"sha256": SHA, "size": 1}}), "kernel", "expected exactly"),
    "extra file": (
        _image(files={"rootfs.ext4": {"sha256": SHA, "size": 1}, "x": {"sha256": SHA, "size": 1}}),
        "image",
        "expected exactly",
    ),
    "bad sha": (_image(files={"rootfs.ext4": {"sha256": "x", "size": 1}}), "image", "invalid sha256"),
    "negative size": (_image(files={"rootfs.ext4": {"sha256": SHA, "size": -1}}), "image", "invalid size"),
    "huge size": (
        _image(files={"rootfs.ext4": {"sha256": SHA, "size": MAX_FILE_SIZE + 1}}),
        "image",
        "invalid size",
    ),
    "metadata not an object": (_image(metadata=[1]), "image", "metadata"),
    "oversized": (_image(metadata={"pad": "x" * 70000}), "image", "larger than"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifest_is_rejected(case: str) -> None:
    raw, kind, match = BAD[case]
    with pytest.raises(BundleError, match=match) as info:
        parse_manifest(raw, kind, "catalog image x")
    assert str(info.value).startswith("catalog image x: ")
    assert "\n" not in str(info.value)
