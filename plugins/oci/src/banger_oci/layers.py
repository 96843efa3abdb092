"""Read one OCI/Docker layer blob as a stream of checked tar members.

A layer is hostile until proven otherwise: it is decompressed as a stream (never
written out whole), its uncompressed bytes are hashed and must match the image
config's ``diff_id``, the uncompressed size is capped (a small blob that inflates
to terabytes is refused), and every member name is checked before anything is
done with it. Nothing here touches the host filesystem except reading the blob:
device nodes and owners are only *described* (:class:`Member`), the ext4 builder
creates them inside the image.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, Protocol

import zstandard

#: Layer media types and the compression each one uses.
MEDIA_TYPES: dict[str, str] = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
DIFF_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
#: PAX extended headers and GNU long names are read whole into memory by tarfile:
#: real ones are a few KiB (a long path, some xattrs), so anything bigger is an attack.
MAX_HEADER = 1 << 20
#: ext4 stores at most 255 bytes per name, and 32-bit owner ids.
MAX_NAME = 255
MAX_ID = (1 << 32) - 1
XATTR_PREFIX = "SCHILY.xattr."


class LayerError(ValueError):
    """A hostile or broken layer: one line naming the layer and the entry."""


class Kind(enum.Enum):
    """What a tar member creates."""

    FILE = "file"
    DIR = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hard link"
    CHAR = "character device"
    BLOCK = "block device"
    FIFO = "fifo"


@dataclass(frozen=True)
class Layer:
    """One layer of an image, as the registry client hands it over."""

    path: Path  #: the blob file as downloaded (compressed), digest already verified
    media_type: str  #: OCI/Docker layer media type
    diff_id: str  #: ``sha256:...`` of the uncompressed tar (from the image config), checked while reading


@dataclass(frozen=True)
class LayerLimits:
    """Decompression-bomb guards (the defaults admit any real image)."""

    #: Hard cap on one layer's uncompressed tar.
    max_bytes: int = 64 << 30
    #: Uncompressed/compressed ratio allowed beyond ``ratio_free_bytes``; real layers stay under ~20.
    max_ratio: int = 200
    #: A small layer may inflate freely up to this size (a file of zeros compresses ~1000:1).
    ratio_free_bytes: int = 256 << 20
    #: Members per layer (each costs memory while the tree is merged).
    max_members: int = 4_000_000

    def cap(self, compressed: int) -> int:
        """The most uncompressed bytes a blob of ``compressed`` bytes may yield."""
        return min(self.max_bytes, max(self.ratio_free_bytes, compressed * self.max_ratio))


@dataclass(frozen=True)
class Member:
    """One checked tar member. ``path`` is normalized and relative to the image root ("" is the root)."""

    path: str
    kind: Kind
    mode: int  #: permission bits including setuid/setgid/sticky (no file type)
    uid: int
    gid: int
    mtime: int
    size: int = 0
    #: symlink target (verbatim: it resolves inside the guest) or hard-link target (normalized path)
    link: str = ""
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses oversized PAX/GNU long-name headers before tarfile reads them into memory."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        extended = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME)
        if self.type in (*extended, tarfile.GNUTYPE_LONGLINK) and self.size > MAX_HEADER:
            raise LayerError(f"an extended tar header of {self.size} bytes (more than {MAX_HEADER})")
        processed: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
        return processed


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _HashingReader:
    """The uncompressed stream: hashes every byte and stops past ``cap`` bytes."""

    def __init__(self, source: _Readable, cap: int) -> None:
        self.source = source
        self.cap = cap
        self.count = 0
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size if size >= 0 else 1 << 20)
        self.count += len(data)
        if self.count > self.cap:
            raise LayerError(f"it inflates past {self.cap} bytes (a decompression bomb?)")
        self.digest.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def normalize(name: str) -> str:
    """A member name as a path relative to the image root; raises :class:`LayerError` for escapes."""
    if "\0" in name:
        raise LayerError(f"entry {name!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise LayerError(f"entry {name!r} has an absolute name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"entry {name!r} has '..' in its name")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME:
            raise LayerError(f"entry {name!r} has a name component longer than {MAX_NAME} bytes")
    return "/".join(parts)


_DEVICES = {tarfile.CHRTYPE: Kind.CHAR, tarfile.BLKTYPE: Kind.BLOCK, tarfile.FIFOTYPE: Kind.FIFO}


def _member(info: tarfile.TarInfo) -> Member:
    path = normalize(info.name)
    link = ""
    if info.isreg():
        kind = Kind.FILE
    elif info.isdir():
        kind = Kind.DIR
    elif info.issym():
        kind, link = Kind.SYMLINK, info.linkname
        if not link or "\0" in link:
            raise LayerError(f"symlink {info.name!r} has an empty or NUL-bearing target")
    elif info.islnk():
        kind, link = Kind.HARDLINK, normalize(info.linkname)
        if not link:
            raise LayerError(f"hard link {info.name!r} points at the root directory")
    elif info.type in _DEVICES:
        kind = _DEVICES[info.type]
    else:
        raise LayerError(f"entry {info.name!r} has unsupported tar type {info.type!r}")
    if not (0 <= info.uid <= MAX_ID and 0 <= info.gid <= MAX_ID):
        raise LayerError(f"entry {info.name!r}: owner {info.uid}:{info.gid} does not fit ext4 (32-bit ids)")
    xattrs = {
        key.removeprefix(XATTR_PREFIX): value.encode("utf-8", "surrogateescape")
        for key, value in info.pax_headers.items()
        if key.startswith(XATTR_PREFIX)
    }
    device = kind in (Kind.CHAR, Kind.BLOCK)
    return Member(
        path,
        kind,
        mode=info.mode & 0o7777,
        uid=info.uid,
        gid=info.gid,
        mtime=max(0, int(info.mtime)),  # debugfs cannot set a time before 1970 (it wraps to 2106)
        size=info.size if kind is Kind.FILE else 0,
        link=link,
        major=info.devmajor if device else 0,
        minor=info.devminor if device else 0,
        xattrs=xattrs,
    )


def _decompressed(layer: Layer, raw: BinaryIO) -> _Readable:
    compression = MEDIA_TYPES.get(layer.media_type)
    if compression is None:
        known = ", ".join(sorted(MEDIA_TYPES))
        raise LayerError(f"layer {layer.path.name}: unsupported media type {layer.media_type!r} (supported: {known})")
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


_BROKEN = (tarfile.TarError, zlib.error, zstandard.ZstdError, EOFError, OSError)


def _layer_error(label: str, entry: str, error: Exception) -> LayerError:
    if isinstance(error, LayerError):
        where = f" at entry {entry!r}" if entry and repr(entry) not in str(error) else ""
        return LayerError(f"{label}{where}: {error}")
    return LayerError(f"{label}: broken layer ({type(error).__name__}: {error})")


class Content:
    """A regular file's bytes, read straight from the layer stream (errors become :class:`LayerError`)."""

    def __init__(self, source: IO[bytes], label: str, entry: str) -> None:
        self.source, self.label, self.entry = source, label, entry

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self.source.read(size)
        except (LayerError, *_BROKEN) as error:
            raise _layer_error(self.label, self.entry, error) from None


def read_layer(layer: Layer, limits: LayerLimits | None = None) -> Iterator[tuple[Member, Content | None]]:
    """Yield each member of ``layer`` with its content for a regular file (read it before the next).

    The diff_id is checked once the stream is exhausted, so a consumer must not
    trust what it built from the members until the generator has finished.

    Raises:
        LayerError: a hostile entry, a broken stream, a bomb, or a diff_id mismatch (one line).
    """
    limits = limits or LayerLimits()
    label = f"layer {layer.diff_id[:19]}"
    if not DIFF_ID_RE.match(layer.diff_id):
        raise LayerError(f"{label}: diff_id {layer.diff_id!r} is not sha256:<64 hex digits>")
    current = ""
    try:
        with layer.path.open("rb") as raw:
            reader = _HashingReader(_decompressed(layer, raw), limits.cap(layer.path.stat().st_size))
            with tarfile.open(fileobj=reader, mode="r|", tarinfo=_GuardedTarInfo) as tar:  # type: ignore[call-overload]
                count = 0
                while (info := tar.next()) is not None:
                    tar.members.clear()  # a stream reader keeps every TarInfo otherwise: memory per entry
                    count += 1
                    current = info.name
                    if count > limits.max_members:
                        raise LayerError(f"more than {limits.max_members} entries")
                    member = _member(info)
                    source = tar.extractfile(info) if member.kind is Kind.FILE else None
                    yield member, (Content(source, label, current) if source is not None else None)
                current = ""
            reader.drain()
    except (LayerError, *_BROKEN) as error:
        raise _layer_error(label, current, error) from None
    actual = f"sha256:{reader.digest.hexdigest()}"
    if actual != layer.diff_id:
        raise LayerError(f"{label}: uncompressed content is {actual}, not the diff_id the image config names")
