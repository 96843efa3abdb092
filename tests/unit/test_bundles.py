"""The core's bundle writer, and round trips through the catalog plugin's reader."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

# Round trips need the catalog plugin's reader: absent in `tox -e core` (no plugins installed).
pytest.importorskip("banger_catalog", reason="the catalog plugin is not installed (tox -e core)")

from banger_catalog.errors import BundleError
from banger_core.common.bundles import BundleWriteError, _iter_extents, write_bundle
from banger_core.testing import RecordingProgress
from banger_hookspecs.bundle import MANIFEST_LIMIT
from banger_hookspecs.bundle_reader import extract_bundle, parse_manifest, read_manifest

pytestmark = [pytest.mark.unit, pytest.mark.builtins]

MIB = 1 << 20


def _sparse_rootfs(path: Path, size: int = 64 * MIB) -> bytes:
    """A sparse file with data at the start, in the middle and near the end; returns its content."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, data in (
            (0, b"superblock" * 100),
            (20 * MIB + 123, b"inode table" * 5000),
            (size - 700, b"e" * 50),
        ):
            fh.seek(offset)
            fh.write(data)
    return path.read_bytes()


def _write_manifest(directory: Path, **fields: Any) -> None:
    (directory / "manifest.json").write_text(json.dumps(fields))


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "images" / "debian-bookworm"
    directory.mkdir(parents=True)
    _sparse_rootfs(directory / "rootfs.ext4")
    _write_manifest(
        directory,
        name="debian-bookworm",
        version="recipe-1f2e",
        kernel_ref="generic-6.1",
        created="2025-03-01T12:00:00Z",
        metadata={"recipe_hash": "1f2e"},
    )
    return directory


@pytest.fixture
def kernel_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "kernels" / "generic-6.1"
    directory.mkdir(parents=True)
    (directory / "vmlinux").write_bytes(b"\x7fELF" + os.urandom(300_000))
    (directory / "initrd").write_bytes(b"070701" + os.urandom(50_000))
    _write_manifest(directory, ref="generic-6.1", version="6.1.0-37-cloud-amd64", boot_protocol=1)
    return directory


def _members(bundle: Path) -> list[str]:
    with (
        open(bundle, "rb") as fh,
        zstandard.ZstdDecompressor().stream_reader(fh) as raw,
        tarfile.open(fileobj=raw, mode="r|") as tar,
    ):
        return [member.name for member in tar]


def test_image_round_trip(image_dir: Path, tmp_path: Path) -> None:
    rootfs = (image_dir / "rootfs.ext4").read_bytes()
    out = tmp_path / "debian-bookworm.tar.zst"
    progress = RecordingProgress()
    info = write_bundle("image", image_dir, out, progress)

    data = out.read_bytes()
    assert (info.path, info.size, info.sha256) == (out, len(data), hashlib.sha256(data).hexdigest())
    assert len(data) < len(rootfs) // 100, "zeros compress to almost nothing"
    assert _members(out) == ["manifest.json", "rootfs.ext4"]
    assert json.loads(info.manifest.raw) == {
        "format": 1,
        "kind": "image",
        "name": "debian-bookworm",
        "version": "recipe-1f2e",
        "kernel_ref": "generic-6.1",
        "created": "2025-03-01T12:00:00Z",
        "files": {"rootfs.ext4": {"sha256": hashlib.sha256(rootfs).hexdigest(), "size": len(rootfs)}},
        "metadata": {"recipe_hash": "1f2e"},
    }
    assert progress.steps == ["hashing rootfs.ext4", "exporting image debian-bookworm to debian-bookworm.tar.zst"]
    assert progress.advances[-1] == (len(rootfs), len(rootfs), "B")
    assert all(unit == "B" for _, _, unit in progress.advances)

    dest = tmp_path / "pulled"
    manifest = extract_bundle(out, "image", dest, RecordingProgress(), "test")
    assert (dest / "rootfs.ext4").read_bytes() == rootfs
    assert json.loads((dest / "manifest.json").read_bytes()) == json.loads(info.manifest.raw)
    assert (manifest.name, manifest.kernel_ref, manifest.version) == ("debian-bookworm", "generic-6.1", "recipe-1f2e")
    # Extraction keeps the rootfs sparse: ~160 KiB of data in a 64 MiB file.
    assert (dest / "rootfs.ext4").stat().st_blocks * 512 < 2 * MIB


def test_kernel_round_trip(kernel_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "generic-6.1.tar.zst"
    info = write_bundle("kernel", kernel_dir, out, RecordingProgress())
    assert _members(out) == ["manifest.json", "vmlinux", "initrd"]
    assert (info.manifest.name, info.manifest.boot_protocol) == ("generic-6.1", 1)
    dest = tmp_path / "pulled"
    manifest = extract_bundle(out, "kernel", dest, RecordingProgress(), "test")
    for name in ("vmlinux", "initrd"):
        assert (dest / name).read_bytes() == (kernel_dir / name).read_bytes()
        assert manifest.files[name].sha256 == hashlib.sha256((kernel_dir / name).read_bytes()).hexdigest()
    assert manifest.boot_protocol == 1


def test_a_pulled_directory_exports_again_identically(image_dir: Path, tmp_path: Path) -> None:
    first = write_bundle("image", image_dir, tmp_path / "a.tar.zst", RecordingProgress())
    extract_bundle(first.path, "image", tmp_path / "pulled", RecordingProgress(), "test")
    progress = RecordingProgress()
    second = write_bundle("image", tmp_path / "pulled", tmp_path / "b.tar.zst", progress)
    assert second.manifest == first.manifest
    assert not any(step.startswith("hashing") for step in progress.steps), "recorded digests spare the hash pass"


def test_artifact_shaped_manifests_are_understood(kernel_dir: Path, tmp_path: Path) -> None:
    digests = {n: hashlib.sha256((kernel_dir / n).read_bytes()).hexdigest() for n in ("vmlinux", "initrd")}
    _write_manifest(
        kernel_dir,
        ref="generic-6.1",
        version="6.1.0-37",
        boot_protocol=1,
        vmlinux=str(kernel_dir / "vmlinux"),
        sha256=digests,
    )
    progress = RecordingProgress()
    info = write_bundle("kernel", kernel_dir, tmp_path / "k.tar.zst", progress)
    assert {n: f.sha256 for n, f in info.manifest.files.items()} == digests
    assert not any(step.startswith("hashing") for step in progress.steps)


def test_stale_recorded_digest_fails_and_leaves_nothing(image_dir: Path, tmp_path: Path) -> None:
    _write_manifest(image_dir, name="debian-bookworm", version="1", sha256="00" * 32)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(BundleWriteError, match="does not match the sha256 its manifest records"):
        write_bundle("image", image_dir, out_dir / "x.tar.zst", RecordingProgress())
    assert list(out_dir.iterdir()) == []


def test_gnu_tar_reads_the_bundle(image_dir: Path, tmp_path: Path) -> None:
    if shutil.which("tar") is None or shutil.which("zstd") is None:
        pytest.skip("needs GNU tar and the zstd program (apt: tar zstd)")
    out = write_bundle("image", image_dir, tmp_path / "b.tar.zst", RecordingProgress()).path
    listing = subprocess.run(["tar", "--zstd", "-tf", str(out)], check=True, capture_output=True, text=True)
    assert listing.stdout.split() == ["manifest.json", "rootfs.ext4"]
    unpacked = tmp_path / "gnu"
    unpacked.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(out), "-C", str(unpacked)], check=True)
    assert (unpacked / "rootfs.ext4").read_bytes() == (image_dir / "rootfs.ext4").read_bytes()


def test_refuses_to_overwrite_unless_asked(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    out.write_bytes(b"precious")
    with pytest.raises(BundleWriteError, match="already exists"):
        write_bundle("image", image_dir, out, RecordingProgress())
    assert out.read_bytes() == b"precious"
    info = write_bundle("image", image_dir, out, RecordingProgress(), overwrite=True)
    assert read_manifest(out, "test").name == "debian-bookworm"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    assert info.size == out.stat().st_size


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("no manifest", "has no manifest.json"),
        ("manifest not json", "not valid JSON"),
        ("manifest without name", "lacks a 'name' string"),
        ("bad name", "invalid name"),
        ("missing rootfs", "is missing"),
        ("rootfs is a symlink", "not a regular file"),
        ("huge metadata", "over the 65536 byte limit"),
    ],
)
def test_bad_source_directory_is_a_clear_error(case: str, match: str, image_dir: Path, tmp_path: Path) -> None:
    if case == "no manifest":
        (image_dir / "manifest.json").unlink()
    elif case == "manifest not json":
        (image_dir / "manifest.json").write_text("{")
    elif case == "manifest without name":
        _write_manifest(image_dir, version="1")
    elif case == "bad name":
        _write_manifest(image_dir, name="../../etc", version="1")
    elif case == "missing rootfs":
        (image_dir / "rootfs.ext4").unlink()
    elif case == "rootfs is a symlink":
        target = tmp_path / "elsewhere.ext4"
        (image_dir / "rootfs.ext4").rename(target)
        (image_dir / "rootfs.ext4").symlink_to(target)
    elif case == "huge metadata":
        _write_manifest(image_dir, name="x", version="1", metadata={"pad": "x" * MANIFEST_LIMIT})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(BundleWriteError, match=match) as info:
        write_bundle("image", image_dir, out_dir / "x.tar.zst", RecordingProgress())
    assert "\n" not in str(info.value)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"version": "recipe 1f2e"}, "has an invalid version 'recipe 1f2e'"),
        ({"version": "v" * 129}, "has an invalid version"),
        ({"created": "2025-03-01T12:00:00Z" + " " * 60}, "has an invalid created time"),
    ],
)
def test_a_manifest_readers_would_refuse_is_never_written(
    fields: dict[str, str], problem: str, image_dir: Path, tmp_path: Path
) -> None:
    # Before the writer checked with the reader's own parse_manifest, these bundles were
    # written and then refused by every catalog pull.
    source = {"name": "debian-bookworm", "version": "1", "kernel_ref": "generic-6.1", **fields}
    _write_manifest(image_dir, **source)
    out = tmp_path / "x.tar.zst"

    with pytest.raises(BundleWriteError) as info:
        write_bundle("image", image_dir, out, RecordingProgress())

    message = str(info.value)
    assert message.startswith(f"{image_dir / 'manifest.json'}: the bundle manifest made from it {problem}")
    assert message.endswith(", which readers refuse: fix that field or rebuild the image")
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


@pytest.mark.parametrize("name", ["debian.", "debian-", "a..b", "debian\n"])
def test_image_names_outside_the_one_name_rule_are_refused_by_writer_and_reader(
    name: str, image_dir: Path, tmp_path: Path
) -> None:
    _write_manifest(image_dir, name=name, version="1")
    with pytest.raises(BundleWriteError, match="invalid name"):
        write_bundle("image", image_dir, tmp_path / "x.tar.zst", RecordingProgress())
    manifest = {
        "format": 1,
        "kind": "image",
        "name": name,
        "version": "1",
        "files": {"rootfs.ext4": {"sha256": "0" * 64, "size": 1}},
    }
    with pytest.raises(BundleError, match="has an invalid name"):
        parse_manifest(json.dumps(manifest).encode(), "image", "test")


def test_kernel_needs_a_boot_protocol(kernel_dir: Path, tmp_path: Path) -> None:
    _write_manifest(kernel_dir, ref="generic-6.1", version="6.1")
    with pytest.raises(BundleWriteError, match="boot_protocol"):
        write_bundle("kernel", kernel_dir, tmp_path / "k.tar.zst", RecordingProgress())


def test_unknown_kind_and_missing_output_dir(image_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleWriteError, match="unknown bundle kind"):
        write_bundle("firmware", image_dir, tmp_path / "x.tar.zst", RecordingProgress())  # type: ignore[arg-type]
    with pytest.raises(BundleWriteError, match="does not exist"):
        write_bundle("image", image_dir, tmp_path / "nope" / "x.tar.zst", RecordingProgress())


@pytest.mark.parametrize(
    "layout",
    [
        [],  # all hole
        [(0, 5000)],
        [(3 * MIB + 17, 100)],  # data in the middle only
        [(0, 10), (8 * MIB - 1, 1)],  # data at both ends
        [(MIB - 1, 2 * MIB + 2)],  # data across chunk boundaries
    ],
)
def test_extent_reader_matches_plain_read(layout: list[tuple[int, int]], tmp_path: Path) -> None:
    path = tmp_path / "f"
    size = 8 * MIB
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, length in layout:
            fh.seek(offset)
            fh.write(os.urandom(length))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert b"".join(bytes(chunk) for chunk in _iter_extents(fd, size)) == path.read_bytes()
        # Reading only a prefix stops at the requested size.
        assert sum(len(chunk) for chunk in _iter_extents(fd, MIB + 5)) == MIB + 5
    finally:
        os.close(fd)


def test_manifest_written_is_what_the_reader_validates(image_dir: Path, tmp_path: Path) -> None:
    info = write_bundle("image", image_dir, tmp_path / "b.tar.zst", RecordingProgress())
    raw = info.manifest.raw
    assert parse_manifest(raw, "image", "test").files["rootfs.ext4"].size == 64 * MIB


@pytest.mark.parametrize(("flags", "accepted"), [(["--format=posix"], True), ([], True), (["--sparse"], False)])
def test_bundles_made_by_gnu_tar(flags: list[str], accepted: bool, image_dir: Path, tmp_path: Path) -> None:
    if shutil.which("tar") is None or shutil.which("zstd") is None:
        pytest.skip("needs GNU tar and the zstd program (apt: tar zstd)")
    # The hand-made recipe of docs/bundles.md: a bundle manifest, then tar --zstd.
    info = write_bundle("image", image_dir, tmp_path / "ours.tar.zst", RecordingProgress())
    (image_dir / "manifest.json").write_bytes(info.manifest.raw)
    bundle = tmp_path / "gnu.tar.zst"
    subprocess.run(
        ["tar", "--zstd", *flags, "-cf", str(bundle), "-C", str(image_dir), "manifest.json", "rootfs.ext4"], check=True
    )
    if accepted:
        manifest = extract_bundle(bundle, "image", tmp_path / "dest", RecordingProgress(), "test")
        assert manifest.files == read_manifest(info.path, "test").files
        assert (tmp_path / "dest" / "rootfs.ext4").read_bytes() == (image_dir / "rootfs.ext4").read_bytes()
    else:
        with pytest.raises(BundleError, match="sparse-file member"):
            extract_bundle(bundle, "image", tmp_path / "dest", RecordingProgress(), "test")
        assert list((tmp_path / "dest").iterdir()) == []


def test_publish_script_fills_in_the_placeholder_entry(image_dir: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    embedded = repo / "plugins/catalog/src/banger_catalog/catalog.json"
    catalog = tmp_path / "catalog.json"
    catalog.write_bytes(embedded.read_bytes())
    bundle = write_bundle("image", image_dir, tmp_path / "debian-bookworm.tar.zst", RecordingProgress())
    base = "https://github.com/banger-dev/banger/releases/download/v9.9.9"
    script = [sys.executable, str(repo / "scripts/publish_catalog.py"), "--catalog", str(catalog), "--base-url", base]
    subprocess.run([*script, str(bundle.path)], check=True, capture_output=True)

    before = {(e["kind"], e["name"]): e for e in json.loads(embedded.read_bytes())["entries"]}
    after = {(e["kind"], e["name"]): e for e in json.loads(catalog.read_bytes())["entries"]}
    assert after.keys() == before.keys()
    assert after[("kernel", "generic-6.1")] == before[("kernel", "generic-6.1")]
    image = after[("image", "debian-bookworm")]
    assert image == {
        **before[("image", "debian-bookworm")],
        "url": f"{base}/debian-bookworm.tar.zst",
        "sha256": bundle.sha256,
        "size": bundle.size,
    }

    # A corrupt bundle is refused and the catalog is left as it was.
    broken = tmp_path / "broken.tar.zst"
    broken.write_bytes(bundle.path.read_bytes()[:-100])
    run = subprocess.run([*script, str(broken)], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: ")
    assert json.loads(catalog.read_bytes())["entries"] == list(after.values())


def test_a_source_without_created_gets_its_manifest_files_time_so_exports_are_reproducible(
    image_dir: Path, tmp_path: Path
) -> None:
    """What the store records for most sources has no ``created``: the bundle must not take the wall clock,
    or two exports (two ``image push``) of the same image differ and a registry gets the bundle twice."""
    manifest = json.loads((image_dir / "manifest.json").read_text())
    del manifest["created"]
    (image_dir / "manifest.json").write_text(json.dumps(manifest))
    os.utime(image_dir / "manifest.json", (1_700_000_000, 1_700_000_000))

    first = write_bundle("image", image_dir, tmp_path / "first.tar.zst", RecordingProgress())
    second = write_bundle("image", image_dir, tmp_path / "second.tar.zst", RecordingProgress())

    assert first.manifest.created == "2023-11-14T22:13:20Z"
    assert first.sha256 == second.sha256
