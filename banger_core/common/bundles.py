"""Write image and kernel bundles: a zstd-compressed tar stream, ``manifest.json`` first.

``banger image export`` calls :func:`write_bundle`; the ``catalog`` plugin reads
bundles. The format is the contract's (:mod:`banger_hookspecs.bundle`, described
in docs/bundles.md): the writer checks each manifest with the reader's own
:func:`~banger_hookspecs.bundle.parse_manifest` before writing a byte.

A rootfs is a sparse ext4 file of about 1 GB apparent size. The writer reads
only its data extents (holes are fed to the hash and the compressor as zeros
without touching the disk) and zstd turns the zeros into almost nothing, so
exporting costs about the data, not the apparent size.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

import zstandard

from banger_core.common.errors import BundleWriteError
from banger_hookspecs import Progress
from banger_hookspecs.bundle import (
    BUNDLE_FORMAT,
    MANIFEST_LIMIT,
    MANIFEST_NAME,
    PAYLOAD_FILES,
    SHA256_RE,
    BundleKind,
    BundleManifest,
    FileDigest,
    ManifestError,
    parse_manifest,
)
from banger_hookspecs.names import IMAGE_NAME_RULE, is_image_name

__all__ = ["BundleInfo", "BundleWriteError", "write_bundle"]

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
_PROGRESS_EVERY = 16 << 20
_ZSTD_LEVEL = 3


@dataclass(frozen=True)
class BundleInfo:
    """A bundle written by :func:`write_bundle`.

    Attributes:
        path: where it was written.
        sha256: hex digest of the bundle file (what a catalog entry records).
        size: size of the bundle file in bytes.
        manifest: the manifest stored as its first member (``manifest.raw`` its bytes).
    """

    path: Path
    sha256: str
    size: int
    manifest: BundleManifest


def write_bundle(
    kind: BundleKind,
    source_dir: Path,
    out_path: Path,
    progress: Progress,
    *,
    overwrite: bool = False,
) -> BundleInfo:
    """Write the image or kernel in ``source_dir`` as a bundle at ``out_path``.

    ``source_dir`` holds ``manifest.json`` plus ``rootfs.ext4`` (image) or
    ``vmlinux`` and ``initrd`` (kernel). Digests the source manifest records are
    trusted for the bundle's manifest and checked while streaming; missing ones
    are computed first. The bundle is streamed into ``OUT.*.partial`` next to
    ``out_path`` and renamed into place only once complete, so a failure leaves
    nothing behind.

    Args:
        kind: ``"image"`` or ``"kernel"``.
        source_dir: the local image or kernel directory.
        out_path: the bundle to write (conventionally ``NAME.tar.zst``).
        progress: receives a step per phase and byte counts.
        overwrite: replace ``out_path`` if it exists (otherwise that is an error).

    Returns:
        The written bundle's path, digest, size and manifest.

    Raises:
        BundleWriteError: bad source directory, existing output, or a payload
            that changed while it was exported.

    Example:
        >>> info = write_bundle("image", store / "debian-bookworm", Path("debian-bookworm.tar.zst"),
        ...                     progress)  # doctest: +SKIP
        >>> info.manifest.files["rootfs.ext4"].size  # doctest: +SKIP
        1073741824
    """
    if kind not in PAYLOAD_FILES:
        raise BundleWriteError(f"unknown bundle kind {kind!r}: use 'image' or 'kernel'")
    source_dir = Path(source_dir)
    out_path = Path(out_path)
    source = _read_source_manifest(kind, source_dir)
    if out_path.exists() and not overwrite:
        raise BundleWriteError(f"{out_path} already exists: remove it or choose another output file")
    if not out_path.parent.is_dir():
        raise BundleWriteError(f"cannot write {out_path}: directory {out_path.parent} does not exist")

    files: dict[str, FileDigest] = {}
    for name in PAYLOAD_FILES[kind]:
        path = source_dir / name
        size = _payload_size(path)
        recorded = _recorded_sha256(source, kind, name)
        if recorded is None:
            progress.step(f"hashing {name}")
            recorded = _hash_file(path, size, progress)
        files[name] = FileDigest(sha256=recorded, size=size)

    fallback_created = _file_time(source_dir / MANIFEST_NAME)
    bundle_manifest = _bundle_manifest(kind, source, files, fallback_created)
    manifest_bytes = json.dumps(bundle_manifest, indent=2, sort_keys=True).encode() + b"\n"
    if len(manifest_bytes) > MANIFEST_LIMIT:
        raise BundleWriteError(
            f"manifest.json of {source_dir} would be {len(manifest_bytes)} bytes, over the {MANIFEST_LIMIT} byte "
            "limit readers accept: shorten its metadata"
        )
    try:
        manifest = parse_manifest(manifest_bytes, kind)  # what every reader checks: never write a bundle it refuses
    except ManifestError as exc:
        raise BundleWriteError(
            f"{source_dir / MANIFEST_NAME}: the bundle manifest made from it {exc}, which readers refuse: "
            f"fix that field or rebuild the {kind}"
        ) from None

    progress.step(f"exporting {kind} {manifest.name} to {out_path.name}")
    fd, partial_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".partial", dir=out_path.parent)
    partial = Path(partial_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            sink = _HashingWriter(raw)
            _write_stream(sink, manifest, source_dir, progress)
            raw.flush()
            os.fchmod(raw.fileno(), 0o644)
            os.fsync(raw.fileno())
        _publish(partial, out_path, overwrite=overwrite)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BundleInfo(path=out_path, sha256=sink.hexdigest(), size=sink.written, manifest=manifest)


# --------------------------------------------------------------------------
# Source directory
# --------------------------------------------------------------------------


def _read_source_manifest(kind: str, source_dir: Path) -> dict[str, object]:
    """Load and check the source dir's manifest.json (whatever wrote the dir: a pull or a build)."""
    path = source_dir / MANIFEST_NAME
    if not source_dir.is_dir():
        raise BundleWriteError(f"{source_dir} is not a directory: give the {kind}'s directory")
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise BundleWriteError(f"{source_dir} has no {MANIFEST_NAME}: it is not a banger {kind} directory") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
        raise BundleWriteError(f"{path} is not a manifest (not a regular file under 1 MiB): rebuild the {kind}")
    try:
        data: object = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleWriteError(f"{path} is not valid JSON ({exc}): rebuild the {kind}") from None
    if not isinstance(data, dict):
        raise BundleWriteError(f"{path} is not a JSON object: rebuild the {kind}")
    key = "name" if kind == "image" else "ref"
    for field_name in (key, "version"):
        value = data.get(field_name)
        if not isinstance(value, str) or not value:
            raise BundleWriteError(f"{path} lacks a {field_name!r} string: rebuild the {kind}")
    if not is_image_name(data[key]):
        raise BundleWriteError(f"{path} has an invalid {key} {data[key]!r}: {IMAGE_NAME_RULE}")
    if kind == "image":
        kernel_ref = data.get("kernel_ref")
        if kernel_ref is not None and not is_image_name(kernel_ref):
            raise BundleWriteError(f"{path} has an invalid kernel_ref {kernel_ref!r}: rebuild the image")
    else:
        boot_protocol = data.get("boot_protocol")
        if isinstance(boot_protocol, bool) or not isinstance(boot_protocol, int) or boot_protocol < 1:
            raise BundleWriteError(f"{path} lacks a positive integer 'boot_protocol': rebuild the kernel")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise BundleWriteError(f"{path}: 'metadata' must be a JSON object")
    return data


def _recorded_sha256(source: Mapping[str, object], kind: str, name: str) -> str | None:
    """The digest of ``name`` the source manifest records, in any of the shapes banger writes.

    Bundle manifests record ``files[name].sha256``; artifact-shaped manifests
    record ``sha256`` (a string for an image's rootfs, a mapping by file name
    for a kernel).
    """
    candidates: list[object] = []
    files = source.get("files")
    if isinstance(files, dict) and isinstance(files.get(name), dict):
        candidates.append(files[name].get("sha256"))
    top = source.get("sha256")
    if isinstance(top, dict):
        candidates.append(top.get(name))
    elif kind == "image":
        candidates.append(top)
    for value in candidates:
        if isinstance(value, str) and SHA256_RE.fullmatch(value):
            return value
    return None


def _payload_size(path: Path) -> int:
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise BundleWriteError(f"{path} is missing: the directory is incomplete, rebuild or re-pull it") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleWriteError(f"{path} is not a regular file (symlinks are not followed): replace it with the file")
    return st.st_size


def _bundle_manifest(
    kind: str, source: Mapping[str, object], files: Mapping[str, FileDigest], fallback_created: str
) -> dict[str, object]:
    """The bundle manifest as JSON data; :func:`write_bundle` checks it with ``parse_manifest``."""
    created = source.get("created")
    if not isinstance(created, str) or not created:
        created = fallback_created
    metadata = source.get("metadata")
    manifest: dict[str, object] = {"format": BUNDLE_FORMAT, "kind": kind}
    if kind == "image":
        manifest.update(name=source["name"], kernel_ref=source.get("kernel_ref"))
    else:
        manifest.update(ref=source["ref"], boot_protocol=source["boot_protocol"])
    manifest.update(
        version=source["version"],
        created=created,
        files={name: {"sha256": f.sha256, "size": f.size} for name, f in files.items()},
        metadata=metadata if isinstance(metadata, dict) else {},
    )
    return manifest


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self._raw.write(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _iter_extents(fd: int, size: int) -> Iterator[memoryview]:
    """Yield ``size`` bytes of ``fd`` in chunks, serving holes from a zero buffer without reading them."""
    buf = bytearray(_CHUNK)
    offset = 0
    while offset < size:
        data_start = _seek(fd, offset, os.SEEK_DATA, size)
        while offset < data_start:
            step = min(_CHUNK, data_start - offset)
            yield memoryview(_ZEROS)[:step]
            offset += step
        if offset >= size:
            break
        data_end = _seek(fd, offset, os.SEEK_HOLE, size)
        while offset < data_end:
            step = min(_CHUNK, data_end - offset)
            got = os.preadv(fd, [memoryview(buf)[:step]], offset)
            if got <= 0:
                raise BundleWriteError("a payload file shrank while it was exported: export it again")
            yield memoryview(buf)[:got]
            offset += got


def _seek(fd: int, offset: int, whence: int, size: int) -> int:
    """``lseek`` for SEEK_DATA/SEEK_HOLE, clamped to ``size``; no data after ``offset`` means ``size``."""
    try:
        return min(os.lseek(fd, offset, whence), size)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # only a hole is left
            return size
        raise


def _hash_file(path: Path, size: int, progress: Progress) -> str:
    digest = hashlib.sha256()
    done = reported = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        for chunk in _iter_extents(fd, size):
            digest.update(chunk)
            done += len(chunk)
            if done - reported >= _PROGRESS_EVERY or done == size:
                progress.advance(done, size)
                reported = done
    finally:
        os.close(fd)
    return digest.hexdigest()


def _write_stream(sink: _HashingWriter, manifest: BundleManifest, source_dir: Path, progress: Progress) -> None:
    mtime = _mtime(manifest.created)
    total = manifest.payload_size
    done = reported = 0

    def count(chunk: memoryview) -> None:
        nonlocal done, reported
        done += len(chunk)
        if done - reported >= _PROGRESS_EVERY or done == total:
            progress.advance(done, total)
            reported = done

    # threads=-1: one zstd worker per CPU; compression is the bottleneck of an export.
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, threads=-1, write_checksum=True)
    with compressor.stream_writer(cast("IO[bytes]", sink), closefd=False) as zstd_out:
        # The tar framing is written by hand around tarfile's own headers: tarfile's stream
        # mode re-slices every write into 10 KiB records, which doubles the cost of an export.
        written = _write_member(zstd_out, _member(MANIFEST_NAME, len(manifest.raw), mtime), [manifest.raw])
        for name, entry in manifest.files.items():
            digest = hashlib.sha256()
            fd = os.open(source_dir / name, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                chunks = _observed(_iter_extents(fd, entry.size), digest.update, count)
                written += _write_member(zstd_out, _member(name, entry.size, mtime), chunks)
            finally:
                os.close(fd)
            if digest.hexdigest() != entry.sha256:
                raise BundleWriteError(
                    f"{source_dir / name} does not match the sha256 its manifest records (changed since it was "
                    "built?): rebuild or re-pull it before exporting"
                )
        # End of archive: two zero blocks, then padding to a whole tar record like tar(1) writes.
        written += 2 * tarfile.BLOCKSIZE
        zstd_out.write(bytes(2 * tarfile.BLOCKSIZE + (-written % tarfile.RECORDSIZE)))
    if total == 0:
        progress.advance(0, 0)


def _observed(chunks: Iterable[memoryview], *observers: Callable[[memoryview], object]) -> Iterator[memoryview]:
    """``chunks``, each shown to every observer (digest, progress count) on its way through."""
    for chunk in chunks:
        for observe in observers:
            observe(chunk)
        yield chunk


def _write_member(out: IO[bytes], info: tarfile.TarInfo, chunks: Iterable[bytes | memoryview]) -> int:
    """Write one regular-file member (header, data, padding); return the bytes written."""
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    out.write(header)
    size = 0
    for chunk in chunks:
        out.write(chunk)
        size += len(chunk)
    if size != info.size:
        raise BundleWriteError(f"{info.name} changed size while it was exported: export it again")
    padding = -size % tarfile.BLOCKSIZE
    out.write(bytes(padding))
    return len(header) + size + padding


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = mtime
    info.type = tarfile.REGTYPE
    return info


def _file_time(path: Path) -> str:
    """When ``path`` was last written, as a bundle's ``created``.

    A source manifest without ``created`` (what the store records for most
    sources) is dated by its file, written when the image was stored: never by
    the clock, so exporting the same image twice gives the same bundle, byte
    for byte (and pushing it again uploads nothing).
    """
    return datetime.fromtimestamp(int(path.stat().st_mtime), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mtime(created: str) -> int:
    try:
        return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _publish(partial: Path, out_path: Path, *, overwrite: bool) -> None:
    """Move the finished bundle into place atomically; without ``overwrite`` never clobber a file."""
    if overwrite:
        os.replace(partial, out_path)
    else:
        exists = BundleWriteError(f"{out_path} already exists: remove it or choose another output file")
        try:
            os.link(partial, out_path)
        except FileExistsError:
            raise exists from None
        except OSError:
            # Filesystems without hard links (vfat, some FUSE): check, then rename.
            if out_path.exists():
                raise exists from None
            os.rename(partial, out_path)
        else:
            partial.unlink()
    dir_fd = os.open(out_path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
