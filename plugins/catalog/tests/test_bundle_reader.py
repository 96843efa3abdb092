"""The bundle reader: good bundles extract (sparsely), hostile ones are rejected leaving nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from banger_catalog.errors import BundleError
from banger_core.testing import RecordingProgress
from banger_hookspecs.bundle import MANIFEST_LIMIT, BundleManifest
from banger_hookspecs.bundle_reader import extract_bundle, read_manifest

pytestmark = pytest.mark.unit


def _reject(bundle: Path, dest: Path, match: str, kind: str = "image") -> BundleError:
    dest.mkdir(exist_ok=True)
    with pytest.raises(BundleError, match=match) as info:
        extract_bundle(bundle, kind, dest, RecordingProgress(), "catalog image test-image")
    assert list(dest.iterdir()) == [], "a rejected bundle must leave dest empty (no staging dir either)"
    assert "\n" not in str(info.value)
    return info.value


def test_image_bundle_extracts_with_manifest(craft: Any, tmp_path: Path) -> None:
    rootfs = craft.image_files["rootfs.ext4"]
    dest = tmp_path / "dest"
    progress = RecordingProgress()
    manifest = extract_bundle(craft.good("image"), "image", dest, progress, "test")
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "rootfs.ext4"]
    assert (dest / "rootfs.ext4").read_bytes() == rootfs
    assert json.loads((dest / "manifest.json").read_bytes())["name"] == "test-image"
    assert (manifest.name, manifest.kernel_ref, manifest.version) == ("test-image", "generic-6.1", "2025.1")
    assert manifest.files["rootfs.ext4"].sha256 == hashlib.sha256(rootfs).hexdigest()
    assert progress.advances[-1] == (len(rootfs), len(rootfs), "B")


def test_kernel_bundle_extracts(craft: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    manifest = extract_bundle(craft.good("kernel"), "kernel", dest, RecordingProgress(), "test")
    assert sorted(p.name for p in dest.iterdir()) == ["initrd", "manifest.json", "vmlinux"]
    for name, data in craft.kernel_files.items():
        assert (dest / name).read_bytes() == data
    assert (manifest.name, manifest.boot_protocol) == ("generic-6.1", 1)


def test_zero_blocks_become_holes(craft: Any, tmp_path: Path) -> None:
    block = 64 << 10
    rootfs = bytes(8 * block) + b"x" * block + bytes(6 * block) + b"y"
    files = {"rootfs.ext4": rootfs}
    bundle = craft.write(
        tmp_path / "sparse.tar.zst",
        [craft.Member("manifest.json", craft.manifest("image", files)), craft.Member("rootfs.ext4", rootfs)],
    )
    extract_bundle(bundle, "image", tmp_path / "dest", RecordingProgress(), "test")
    out = tmp_path / "dest" / "rootfs.ext4"
    assert out.read_bytes() == rootfs
    # Two 64 KiB data runs written, 14 blocks of zeros left as holes.
    assert out.stat().st_blocks * 512 <= 3 * block


def test_verify_only_writes_nothing(craft: Any, tmp_path: Path) -> None:
    bundle = craft.good("image")
    before = sorted(tmp_path.iterdir())
    assert extract_bundle(bundle, "image", None, RecordingProgress(), "test").name == "test-image"
    assert sorted(tmp_path.iterdir()) == before


def test_read_manifest_takes_the_kind_from_the_bundle(craft: Any) -> None:
    assert read_manifest(craft.good("kernel"), "test").kind == "kernel"
    assert read_manifest(craft.good("image", name="i.tar.zst"), "test").kind == "image"


def test_check_callback_rejects_before_the_payload(craft: Any, tmp_path: Path) -> None:
    seen: list[BundleManifest] = []

    def refuse(manifest: BundleManifest) -> None:
        seen.append(manifest)
        raise BundleError("not the image the catalog lists")

    dest = tmp_path / "dest"
    dest.mkdir()
    progress = RecordingProgress()
    with pytest.raises(BundleError, match="not the image"):
        extract_bundle(craft.good("image"), "image", dest, progress, "test", check=refuse)
    assert len(seen) == 1 and list(dest.iterdir()) == []
    assert progress.advances == []


def test_existing_payload_in_dest_is_refused(craft: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "rootfs.ext4").write_bytes(b"keep me")
    with pytest.raises(BundleError, match="already exists"):
        extract_bundle(craft.good("image"), "image", dest, RecordingProgress(), "test")
    assert (dest / "rootfs.ext4").read_bytes() == b"keep me"
    assert [p.name for p in dest.iterdir()] == ["rootfs.ext4"]


def _hostile(craft: Any) -> dict[str, tuple[list[Any], str]]:
    Member, manifest_bytes = craft.Member, craft.manifest
    IMAGE_FILES, KERNEL_FILES = craft.image_files, craft.kernel_files
    MANIFEST = manifest_bytes("image", IMAGE_FILES)
    ROOTFS = IMAGE_FILES["rootfs.ext4"]
    return {
        "dotdot": ([Member("manifest.json", MANIFEST), Member("../rootfs.ext4", ROOTFS)], r"'\.\.' component"),
        "absolute": ([Member("manifest.json", MANIFEST), Member("/etc/rootfs.ext4", ROOTFS)], "absolute path"),
        "symlink": (
            [Member("manifest.json", MANIFEST), Member("rootfs.ext4", type=tarfile.SYMTYPE, linkname="/etc/shadow")],
            "symbolic link",
        ),
        "hardlink": (
            [Member("manifest.json", MANIFEST), Member("rootfs.ext4", type=tarfile.LNKTYPE, linkname="manifest.json")],
            "hard link",
        ),
        "char device": (
            [Member("manifest.json", MANIFEST), Member("rootfs.ext4", type=tarfile.CHRTYPE)],
            "device node",
        ),
        "block device": (
            [Member("manifest.json", MANIFEST), Member("rootfs.ext4", type=tarfile.BLKTYPE)],
            "device node",
        ),
        "fifo": ([Member("manifest.json", MANIFEST), Member("rootfs.ext4", type=tarfile.FIFOTYPE)], "FIFO"),
        "directory": ([Member("manifest.json", MANIFEST), Member("etc", type=tarfile.DIRTYPE)], "directory"),
        "extra member": (
            [
                Member("manifest.json", MANIFEST),
                Member("rootfs.ext4", ROOTFS),
                Member("authorized_keys", b"ssh-ed25519"),
            ],
            "unexpected member 'authorized_keys'",
        ),
        "duplicate payload": (
            [Member("manifest.json", MANIFEST), Member("rootfs.ext4", ROOTFS), Member("rootfs.ext4", ROOTFS)],
            "twice",
        ),
        "duplicate manifest": ([Member("manifest.json", MANIFEST), Member("manifest.json", MANIFEST)], "twice"),
        "manifest not first": ([Member("rootfs.ext4", ROOTFS), Member("manifest.json", MANIFEST)], "starts with"),
        "oversized manifest": (
            [Member("manifest.json", b" " * (MANIFEST_LIMIT + 1)), Member("rootfs.ext4", ROOTFS)],
            "over the 65536 byte limit",
        ),
        "missing payload": ([Member("manifest.json", MANIFEST)], "lacks rootfs.ext4"),
        "payload differs from manifest": (
            [Member("manifest.json", MANIFEST), Member("rootfs.ext4", ROOTFS[:-4] + b"evil")],
            "does not match the sha256",
        ),
        "payload size differs from manifest": (
            [Member("manifest.json", MANIFEST), Member("rootfs.ext4", ROOTFS + b"more")],
            "manifest says",
        ),
        "manifest of the other kind": (
            [
                Member("manifest.json", manifest_bytes("kernel", KERNEL_FILES)),
                *[Member(n, d) for n, d in KERNEL_FILES.items()],
            ],
            "says kind 'kernel'",
        ),
        "newer format": (
            [Member("manifest.json", manifest_bytes("image", IMAGE_FILES, format=2)), Member("rootfs.ext4", ROOTFS)],
            "upgrade banger",
        ),
        "manifest lists an extra file": (
            [
                Member(
                    "manifest.json",
                    manifest_bytes("image", {**IMAGE_FILES, "evil": b"x"}),
                ),
                Member("rootfs.ext4", ROOTFS),
            ],
            "expected exactly",
        ),
        "empty": ([], "empty"),
    }


HOSTILE_CASES = [
    "absolute",
    "block device",
    "char device",
    "directory",
    "dotdot",
    "duplicate manifest",
    "duplicate payload",
    "empty",
    "extra member",
    "fifo",
    "hardlink",
    "manifest lists an extra file",
    "manifest not first",
    "manifest of the other kind",
    "missing payload",
    "newer format",
    "oversized manifest",
    "payload differs from manifest",
    "payload size differs from manifest",
    "symlink",
]


def test_every_hostile_case_is_run(craft: Any) -> None:
    assert sorted(_hostile(craft)) == HOSTILE_CASES


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_hostile_bundle_is_rejected(case: str, craft: Any, tmp_path: Path) -> None:
    members, match = _hostile(craft)[case]
    bundle = craft.write(tmp_path / "hostile.tar.zst", members)
    _reject(bundle, tmp_path / "dest", match)


def test_huge_pax_header_is_cut_off_by_the_byte_budget(tmp_path: Path) -> None:
    # tarfile reads a pax header into memory whole; a 512 MiB one must fail long before that.
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 512 << 20
    raw = io.BytesIO()
    raw.write(header.tobuf(tarfile.USTAR_FORMAT))
    compressor = zstandard.ZstdCompressor()
    with open(tmp_path / "bomb.tar.zst", "wb") as fh, compressor.stream_writer(fh) as out:
        out.write(raw.getvalue())
        zeros = bytes(1 << 20)
        for _ in range(512):
            out.write(zeros)
    _reject(tmp_path / "bomb.tar.zst", tmp_path / "dest", "expands beyond")


def test_not_zstd_is_rejected(tmp_path: Path) -> None:
    bundle = tmp_path / "plain.tar"
    bundle.write_bytes(b"this is not zstd at all" * 100)
    _reject(bundle, tmp_path / "dest", "not valid zstd")


def test_truncated_stream_is_rejected(craft: Any, tmp_path: Path) -> None:
    raw = zstandard.ZstdDecompressor().decompress(craft.good("image").read_bytes())
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(zstandard.ZstdCompressor().compress(raw[: len(raw) // 2]))
    _reject(cut, tmp_path / "dest", "not a valid tar stream|lacks")
