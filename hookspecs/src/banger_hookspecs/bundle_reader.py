"""Read a bundle safely: verify every member against the manifest while extracting it.

Needs ``zstandard`` (the ``bundles`` extra: ``banger-hookspecs[bundles]``); the
contract's other modules import nothing beyond the standard library. Every
reader of bundles uses this one (the ``catalog`` plugin for catalog entries, the
``oci`` plugin for bundles published to a registry by ``banger image push``).

Every bundle is treated as hostile, even after its digest matched the catalog
(the catalog may be a third party's). Only regular files are accepted: exactly
``manifest.json`` first, then each payload file of the bundle's kind once, with
the size and sha256 the manifest promises. No absolute paths, no ``..``, no
links, no device nodes, no directories, nothing else. The decompressed stream
may not exceed what the manifest declares (tarfile reads pax and long-name
headers into memory whole, so the cap applies below tarfile, on the raw
decompressed bytes). Payload files are written sparsely: all-zero blocks of a
rootfs become holes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, cast

import zstandard

from banger_hookspecs import bundle
from banger_hookspecs.bundle import (
    BUNDLE_FORMAT,
    MANIFEST_LIMIT,
    MANIFEST_NAME,
    PAYLOAD_FILES,
    BundleError,
    BundleManifest,
)
from banger_hookspecs.types import Progress

__all__ = ["BundleError", "extract_bundle", "parse_manifest", "read_manifest"]

_CHUNK = 1 << 20
#: Granularity of holes in extracted files (a multiple of every filesystem block size in use).
_SPARSE_BLOCK = 64 << 10
_ZERO_BLOCK = bytes(_SPARSE_BLOCK)
_ZERO_CHUNK = bytes(_CHUNK)
#: Room for tar headers (pax records, end-of-archive blocks, read-ahead) beyond the declared payload.
_HEADER_ROOM = 64 << 10
#: zstd's own default window limit (128 MiB), stated so a frame cannot ask for more memory.
_MAX_WINDOW = 1 << 27
_PROGRESS_EVERY = 16 << 20


def parse_manifest(raw: bytes, kind: str, label: str) -> BundleManifest:
    """Validate manifest bytes from a bundle of ``kind``, as a :class:`BundleError` naming the bundle.

    Args:
        raw: the manifest.json member's content.
        kind: the kind of bundle expected.
        label: names the bundle in error messages (``"catalog image debian-bookworm"``).

    Returns:
        The manifest.

    Raises:
        BundleError: the manifest is not a valid format-1 manifest of ``kind``; the message says what to do.
    """
    try:
        return bundle.parse_manifest(raw, kind)
    except bundle.UnsupportedFormat as exc:
        raise BundleError(
            f"{label}: bundle format {exc.found!r} is not format {BUNDLE_FORMAT}: upgrade banger to use it"
        ) from None
    except bundle.ManifestError as exc:
        raise BundleError(f"{label}: bundle manifest {exc}; the bundle is corrupt, tell its publisher") from None


class _BudgetReader:
    """Decompressed bytes for tarfile, never more than ``limit`` in total."""

    def __init__(self, raw: IO[bytes], limit: int, label: str) -> None:
        self._raw = raw
        self.limit = limit
        self.consumed = 0
        self._label = label

    def read(self, size: int = -1) -> bytes:
        room = self.limit - self.consumed + 1  # one byte more than allowed reveals an overrun
        data: bytes = self._raw.read(room if size < 0 else min(size, room))
        self.consumed += len(data)
        if self.consumed > self.limit:
            raise BundleError(
                f"{self._label}: bundle expands beyond the sizes its manifest declares (a decompression bomb?); "
                "it was rejected, tell its publisher"
            )
        return data


def extract_bundle(
    bundle: Path,
    kind: str,
    dest: Path | None,
    progress: Progress,
    label: str,
    *,
    check: Callable[[BundleManifest], None] | None = None,
) -> BundleManifest:
    """Verify ``bundle`` member by member and, with ``dest``, extract its payload there.

    Files are written into a fresh directory inside ``dest`` and moved into
    ``dest`` (with ``manifest.json``) only once every member is verified; on any
    failure that directory is deleted and ``dest`` is left as it was.

    Args:
        bundle: the tar+zstd bundle file.
        kind: ``image`` or ``kernel``.
        dest: directory to extract into (must not hold the payload's names), or
            None to verify only.
        progress: receives the decompressed byte count.
        label: names the bundle in errors (``"catalog image debian-bookworm"``).
        check: called with the manifest as soon as it is read, before the payload
            is decompressed; raises to reject the bundle.

    Returns:
        The verified manifest.

    Raises:
        BundleError: the bundle is corrupt or hostile; the message says which check failed.
    """
    if kind not in PAYLOAD_FILES:
        raise ValueError(f"unknown bundle kind {kind!r}")
    staging: Path | None = None
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
        for name in (MANIFEST_NAME, *PAYLOAD_FILES[kind]):
            if os.path.lexists(dest / name):
                raise BundleError(f"{label}: {dest / name} already exists: extract into an empty directory")
        staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=dest))
    moved: list[Path] = []
    try:
        manifest = _read_members(bundle, kind, staging, progress, label, check)
        if dest is not None and staging is not None:
            (staging / MANIFEST_NAME).write_bytes(manifest.raw)
            for name in (*manifest.files, MANIFEST_NAME):
                os.rename(staging / name, dest / name)
                moved.append(dest / name)
            staging.rmdir()
            _fsync_dir(dest)
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def read_manifest(bundle: Path, label: str) -> BundleManifest:
    """Read and validate only the manifest at the head of ``bundle`` (its kind is taken from it).

    Args:
        bundle: the tar+zstd bundle file.
        label: names the bundle in errors.

    Returns:
        The manifest; the payload is not checked (use :func:`extract_bundle` with ``dest=None``).

    Raises:
        BundleError: the bundle does not start with a valid manifest.
    """
    decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
    with open(bundle, "rb") as fh, decompressor.stream_reader(fh, read_across_frames=True) as raw:
        budget = _BudgetReader(raw, MANIFEST_LIMIT + _HEADER_ROOM + _CHUNK, label)
        try:
            with tarfile.open(fileobj=cast(IO[bytes], budget), mode="r|", bufsize=_CHUNK) as tar:
                member = tar.next()
                if member is None:
                    raise BundleError(f"{label}: bundle is empty (no manifest.json); it is not a banger bundle")
                _check_member(member, label)
                raw_manifest = _read_manifest_bytes(tar, member, label)
        except tarfile.TarError as exc:
            raise BundleError(f"{label}: bundle is not a valid tar stream ({exc})") from None
        except zstandard.ZstdError as exc:
            raise BundleError(f"{label}: bundle is not valid zstd data ({exc})") from None
    try:
        kind = json.loads(raw_manifest).get("kind")
    except (ValueError, UnicodeDecodeError, AttributeError):
        kind = None
    if kind not in PAYLOAD_FILES:
        raise BundleError(f"{label}: bundle manifest names no known kind (image or kernel); it is not a banger bundle")
    return parse_manifest(raw_manifest, kind, label)


def _read_members(
    bundle: Path,
    kind: str,
    staging: Path | None,
    progress: Progress,
    label: str,
    check: Callable[[BundleManifest], None] | None,
) -> BundleManifest:
    decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
    manifest: BundleManifest | None = None
    seen: set[str] = set()
    done = 0
    with open(bundle, "rb") as fh, decompressor.stream_reader(fh, read_across_frames=True) as raw:
        budget = _BudgetReader(raw, MANIFEST_LIMIT + _HEADER_ROOM + _CHUNK, label)
        try:
            with tarfile.open(fileobj=cast(IO[bytes], budget), mode="r|", bufsize=_CHUNK) as tar:
                for member in tar:
                    _check_member(member, label)
                    if member.name in seen:
                        raise BundleError(f"{label}: bundle holds {member.name!r} twice; it was rejected")
                    seen.add(member.name)
                    if manifest is None:
                        manifest = _read_manifest(tar, member, kind, label)
                        if check is not None:
                            check(manifest)
                        # From here on the manifest's sizes bound the rest of the stream.
                        padded = sum(
                            -(-f.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE for f in manifest.files.values()
                        )
                        budget.limit = budget.consumed + padded + (len(manifest.files) + 1) * _HEADER_ROOM + _CHUNK
                        progress.advance(0, manifest.payload_size)
                        continue
                    promised = manifest.files.get(member.name)
                    if promised is None:
                        raise BundleError(
                            f"{label}: bundle holds an unexpected member {member.name!r} (a {kind} bundle holds "
                            f"{', '.join(PAYLOAD_FILES[kind])}); it was rejected"
                        )
                    if member.size != promised.size:
                        raise BundleError(
                            f"{label}: {member.name} is {member.size} bytes in the bundle but its manifest says "
                            f"{promised.size}; the bundle is corrupt, tell its publisher"
                        )
                    target = staging / member.name if staging is not None else None
                    digest, done = _copy_member(tar, member, target, progress, done, manifest.payload_size)
                    if digest != promised.sha256:
                        raise BundleError(
                            f"{label}: {member.name} does not match the sha256 in the bundle's manifest; "
                            "the bundle is corrupt, tell its publisher"
                        )
        except tarfile.TarError as exc:
            raise BundleError(f"{label}: bundle is not a valid tar stream ({exc}); it was rejected") from None
        except zstandard.ZstdError as exc:
            raise BundleError(f"{label}: bundle is not valid zstd data ({exc}); it was rejected") from None
    if manifest is None:
        raise BundleError(f"{label}: bundle is empty (no manifest.json); it was rejected")
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise BundleError(f"{label}: bundle lacks {', '.join(missing)}; the bundle is incomplete, tell its publisher")
    return manifest


def _check_member(member: tarfile.TarInfo, label: str) -> None:
    """Reject anything but a plain regular file with a plain relative name."""
    name = member.name
    problem = None
    if name.startswith("/"):
        problem = "has an absolute path"
    elif ".." in PurePosixPath(name).parts:
        problem = "has a '..' component"
    elif member.issym():
        problem = f"is a symbolic link (to {member.linkname!r})"
    elif member.islnk():
        problem = f"is a hard link (to {member.linkname!r})"
    elif member.ischr() or member.isblk():
        problem = "is a device node"
    elif member.isfifo():
        problem = "is a FIFO"
    elif member.isdir():
        problem = "is a directory"
    elif member.issparse():
        problem = "is a sparse-file member"
    elif not member.isreg():
        problem = "is not a regular file"
    if problem:
        raise BundleError(
            f"{label}: bundle member {name!r} {problem}; bundles hold only regular files, it was rejected"
        )


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, kind: str, label: str) -> BundleManifest:
    return parse_manifest(_read_manifest_bytes(tar, member, label), kind, label)


def _read_manifest_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, label: str) -> bytes:
    if member.name != MANIFEST_NAME:
        raise BundleError(
            f"{label}: bundle starts with {member.name!r} instead of {MANIFEST_NAME}; it is not a banger bundle"
        )
    if member.size > MANIFEST_LIMIT:
        raise BundleError(
            f"{label}: bundle's {MANIFEST_NAME} is {member.size} bytes, over the {MANIFEST_LIMIT} byte limit; "
            "it was rejected"
        )
    source = tar.extractfile(member)
    if source is None:  # unreachable: _check_member accepted a regular file
        raise BundleError(f"{label}: cannot read {MANIFEST_NAME} from the bundle")
    return source.read(MANIFEST_LIMIT + 1)


def _copy_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    target: Path | None,
    progress: Progress,
    done: int,
    total: int,
) -> tuple[str, int]:
    """Hash one payload member and write it sparsely to ``target``; return (sha256, bytes done so far)."""
    source = tar.extractfile(member)
    if source is None:  # unreachable: _check_member accepted a regular file
        raise BundleError(f"cannot read {member.name} from the bundle")
    digest = hashlib.sha256()
    fd = -1
    if target is not None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        offset = 0
        reported = done
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            if fd >= 0:
                _write_sparse(fd, chunk, offset)
            offset += len(chunk)
            done += len(chunk)
            if done - reported >= _PROGRESS_EVERY:
                progress.advance(done, total)
                reported = done
        progress.advance(done, total)
        if fd >= 0:
            os.ftruncate(fd, offset)  # trailing holes were skipped, not written
            os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    return digest.hexdigest(), done


def _write_sparse(fd: int, chunk: bytes, offset: int) -> None:
    """Write ``chunk`` at ``offset``, leaving all-zero blocks as holes."""
    if chunk == _ZERO_CHUNK:
        return
    run_start = -1
    for start in range(0, len(chunk), _SPARSE_BLOCK):
        # bytes slices compare with memcmp; memoryview comparison is 40x slower.
        block = chunk[start : start + _SPARSE_BLOCK]
        if block == _ZERO_BLOCK[: len(block)]:
            if run_start >= 0:
                _pwrite_all(fd, chunk[run_start:start], offset + run_start)
                run_start = -1
        elif run_start < 0:
            run_start = start
    if run_start >= 0:
        _pwrite_all(fd, chunk[run_start:], offset + run_start)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
