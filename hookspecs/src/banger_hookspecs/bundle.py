"""banger's bundle format: an image or a kernel as one file (docs/bundles.md).

A bundle is a zstd-compressed POSIX tar stream of regular files only:
``manifest.json`` first, then the payload of its kind (:data:`PAYLOAD_FILES`).
The core writes bundles (``banger image export``) and the ``catalog`` plugin
reads them; both take the format from here, and the writer checks every
manifest it writes with :func:`parse_manifest`, the reader's own check.

Example:
    >>> import json
    >>> raw = json.dumps({"format": 1, "kind": "kernel", "ref": "generic-6.1", "version": "6.1.0",
    ...     "boot_protocol": 1, "files": {name: {"sha256": "0" * 64, "size": 1} for name in ("vmlinux", "initrd")}})
    >>> parse_manifest(raw.encode(), "kernel").payload_size
    2
    >>> parse_manifest(raw.replace('"6.1.0"', '"6.1 0"').encode(), "kernel")
    Traceback (most recent call last):
    ...
    banger_hookspecs.bundle.ManifestError: has an invalid version '6.1 0'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from banger_hookspecs.names import is_image_name

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_LIMIT",
    "MANIFEST_NAME",
    "MAX_CREATED_LENGTH",
    "MAX_FILE_SIZE",
    "PAYLOAD_FILES",
    "SHA256_RE",
    "VERSION_RE",
    "BundleError",
    "BundleKind",
    "BundleManifest",
    "FileDigest",
    "ManifestError",
    "UnsupportedFormat",
    "parse_manifest",
]

BundleKind = Literal["image", "kernel"]

#: The format version in every manifest; a reader refuses any other.
BUNDLE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
#: A larger manifest.json is refused before it is parsed (and never written).
MANIFEST_LIMIT = 64 * 1024
#: Exactly these payload members follow the manifest, in any order; a writer uses this order.
PAYLOAD_FILES: Mapping[str, tuple[str, ...]] = {"image": ("rootfs.ext4",), "kernel": ("vmlinux", "initrd")}
#: No payload file may claim more than this (a zip-bomb guard on top of the manifest's own sizes).
MAX_FILE_SIZE = 64 << 30
SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Printable ASCII, no spaces: recipe hashes, dates, kernel releases.
VERSION_RE = re.compile(r"[\x21-\x7e]{1,128}")
MAX_CREATED_LENGTH = 64


class BundleError(Exception):
    """A bundle failed verification: wrong digest, truncated, or hostile content.

    Deliberately not :class:`~banger_hookspecs.SourceUnavailable`: the core must
    not silently fall back to another source after a tampered download. The
    message is one user sentence.
    """


class ManifestError(ValueError):
    """A manifest breaks the format; the message is the problem (``has an invalid version '1 2'``)."""


class UnsupportedFormat(ManifestError):
    """A manifest of another format version (a newer banger wrote it)."""

    def __init__(self, found: object) -> None:
        super().__init__(f"is format {found!r}, not format {BUNDLE_FORMAT}")
        self.found = found


@dataclass(frozen=True)
class FileDigest:
    """What the manifest promises about one payload file."""

    sha256: str
    size: int


@dataclass(frozen=True)
class BundleManifest:
    """A validated bundle manifest.

    Attributes:
        kind: ``image`` or ``kernel``.
        name: image name, or kernel ref.
        version: source-defined version string.
        kernel_ref: the kernel an image wants (None for kernels or "the default").
        boot_protocol: the boot protocol a kernel's initramfs speaks (0 for images).
        created: when the bundle's content was built (ISO 8601).
        files: payload file name → promised digest and size.
        metadata: free-form extra fields.
        raw: the manifest bytes as found in the bundle.
    """

    kind: BundleKind
    name: str
    version: str
    kernel_ref: str | None
    boot_protocol: int
    created: str
    files: Mapping[str, FileDigest]
    metadata: Mapping[str, object] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def payload_size(self) -> int:
        """Total bytes of the payload files."""
        return sum(f.size for f in self.files.values())


def parse_manifest(raw: bytes, kind: str) -> BundleManifest:
    """Validate manifest bytes of a bundle of ``kind``; unknown keys are ignored.

    Args:
        raw: the manifest.json member's content.
        kind: the kind of bundle expected (``image`` or ``kernel``).

    Returns:
        The manifest.

    Raises:
        UnsupportedFormat: another format version.
        ManifestError: anything else wrong; the message names the field.
        ValueError: ``kind`` is not a bundle kind.
    """
    if kind not in PAYLOAD_FILES:
        raise ValueError(f"unknown bundle kind {kind!r}: use 'image' or 'kernel'")
    if len(raw) > MANIFEST_LIMIT:
        raise ManifestError(f"is larger than {MANIFEST_LIMIT} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError("is not valid JSON") from None
    if not isinstance(data, dict):
        raise ManifestError("is not a JSON object")
    if data.get("format") != BUNDLE_FORMAT:
        raise UnsupportedFormat(data.get("format"))
    if data.get("kind") != kind:
        raise ManifestError(f"says kind {data.get('kind')!r}, expected {kind!r}")
    name_key = "name" if kind == "image" else "ref"
    name = data.get(name_key)
    if not is_image_name(name):
        raise ManifestError(f"has an invalid {name_key} {name!r}")
    version = data.get("version")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ManifestError(f"has an invalid version {version!r}")
    kernel_ref = data.get("kernel_ref")
    boot_protocol = data.get("boot_protocol")
    if kind == "image":
        boot_protocol = 0
        if kernel_ref is not None and not is_image_name(kernel_ref):
            raise ManifestError(f"has an invalid kernel_ref {kernel_ref!r}")
    else:
        kernel_ref = None
        if isinstance(boot_protocol, bool) or not isinstance(boot_protocol, int) or boot_protocol < 1:
            raise ManifestError(f"has an invalid boot_protocol {boot_protocol!r}")
    created = data.get("created", "")
    if not isinstance(created, str) or len(created) > MAX_CREATED_LENGTH:
        raise ManifestError("has an invalid created time")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ManifestError("has a metadata field that is not an object")
    return BundleManifest(
        kind="image" if kind == "image" else "kernel",
        name=name,
        version=version,
        kernel_ref=kernel_ref,
        boot_protocol=boot_protocol,
        created=created,
        files=_parse_files(data.get("files"), PAYLOAD_FILES[kind]),
        metadata=metadata,
        raw=raw,
    )


def _parse_files(files: object, expected: tuple[str, ...]) -> dict[str, FileDigest]:
    if not isinstance(files, dict) or sorted(files) != sorted(expected):
        listed = sorted(files) if isinstance(files, dict) else files
        raise ManifestError(f"lists files {listed!r}, expected exactly {list(expected)!r}")
    out: dict[str, FileDigest] = {}
    for name in expected:
        entry = files[name]
        if not isinstance(entry, dict):
            raise ManifestError(f"has no digest for {name}")
        sha256, size = entry.get("sha256"), entry.get("size")
        if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256):
            raise ManifestError(f"has an invalid sha256 for {name}")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
            raise ManifestError(f"has an invalid size for {name} (at most {MAX_FILE_SIZE} bytes)")
        out[name] = FileDigest(sha256=sha256, size=size)
    return out
