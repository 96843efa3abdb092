"""Bundle-crafting helpers for the catalog plugin's tests: good bundles and hostile ones."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard


@dataclass
class Member:
    """One tar member as a test wants it, hostile or not."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def manifest_bytes(kind: str, files: dict[str, bytes], **overrides: Any) -> bytes:
    """A valid format-1 manifest for ``files``; ``overrides`` replace or (with None) drop keys."""
    manifest: dict[str, Any] = {
        "format": 1,
        "kind": kind,
        "version": "2025.1",
        "created": "2025-01-01T00:00:00Z",
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in files.items()
        },
        "metadata": {"recipe": "test"},
    }
    if kind == "image":
        manifest.update(name="test-image", kernel_ref="generic-6.1")
    else:
        manifest.update(ref="generic-6.1", boot_protocol=1)
    for key, value in overrides.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    return json.dumps(manifest).encode()


def write_tar_zst(path: Path, members: list[Member]) -> Path:
    """Write ``members`` verbatim (no safety checks: that is the point) as tar+zstd."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.linkname = member.linkname
            info.mode = 0o644
            if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
            else:
                tar.addfile(info)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


IMAGE_FILES = {"rootfs.ext4": b"\x00" * 200_000 + b"ext4 data" + b"\x00" * 300_000 + b"tail"}
KERNEL_FILES = {"vmlinux": b"\x7fELF" + b"k" * 5000, "initrd": b"070701" + b"i" * 3000}


class BundleCraft:
    """The helpers above, reachable from test modules as the ``craft`` fixture."""

    Member = Member
    manifest = staticmethod(manifest_bytes)
    write = staticmethod(write_tar_zst)
    image_files = IMAGE_FILES
    kernel_files = KERNEL_FILES

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def good(self, kind: str = "image", name: str = "good.tar.zst", **overrides: Any) -> Path:
        """Write a valid bundle of ``kind`` (manifest overrides allowed) and return its path."""
        files = IMAGE_FILES if kind == "image" else KERNEL_FILES
        members = [Member("manifest.json", manifest_bytes(kind, files, **overrides))]
        members += [Member(n, d) for n, d in files.items()]
        return write_tar_zst(self.tmp_path / name, members)


@pytest.fixture
def craft(tmp_path: Path) -> BundleCraft:
    """Bundle-crafting helpers writing into the test's tmp_path."""
    return BundleCraft(tmp_path)
