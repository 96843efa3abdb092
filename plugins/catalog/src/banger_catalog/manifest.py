"""The ``manifest.json`` at the head of every bundle (format 1, see docs/bundles.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from banger_catalog.errors import BundleError

BundleKind = Literal["image", "kernel"]

BUNDLE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
#: A larger manifest.json is refused before it is parsed.
MANIFEST_LIMIT = 64 * 1024
#: Exactly these payload members follow the manifest, in any order.
PAYLOAD_FILES: Mapping[str, tuple[str, ...]] = {"image": ("rootfs.ext4",), "kernel": ("vmlinux", "initrd")}
#: No payload file may claim more than this (a zip-bomb guard on top of the manifest's own sizes).
MAX_FILE_SIZE = 64 << 30

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


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
    metadata: Mapping[str, Any] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def payload_size(self) -> int:
        """Total bytes of the payload files."""
        return sum(f.size for f in self.files.values())


def parse_manifest(raw: bytes, kind: str, label: str) -> BundleManifest:
    """Validate manifest bytes from a bundle of ``kind``; unknown keys are ignored.

    Args:
        raw: the manifest.json member's content.
        kind: the kind of bundle expected.
        label: names the bundle in error messages (``"catalog image debian-bookworm"``).

    Returns:
        The manifest.

    Raises:
        BundleError: the manifest is not a valid format-1 manifest of ``kind``.
    """

    def bad(problem: str) -> BundleError:
        return BundleError(f"{label}: bundle manifest {problem}; the bundle is corrupt, tell its publisher")

    if len(raw) > MANIFEST_LIMIT:
        raise bad(f"is larger than {MANIFEST_LIMIT} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad("is not a JSON object")
    if data.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{label}: bundle format {data.get('format')!r} is not format {BUNDLE_FORMAT}: upgrade banger to use it"
        )
    if data.get("kind") != kind:
        raise bad(f"says kind {data.get('kind')!r}, expected {kind!r}")
    name_key = "name" if kind == "image" else "ref"
    name = data.get(name_key)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise bad(f"has an invalid {name_key} {name!r}")
    version = data.get("version")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise bad(f"has an invalid version {version!r}")
    kernel_ref: str | None = None
    boot_protocol = 0
    if kind == "image":
        kernel_ref = data.get("kernel_ref")
        if kernel_ref is not None and not (isinstance(kernel_ref, str) and NAME_RE.match(kernel_ref)):
            raise bad(f"has an invalid kernel_ref {kernel_ref!r}")
    else:
        boot_protocol = data.get("boot_protocol")  # type: ignore[assignment]
        if isinstance(boot_protocol, bool) or not isinstance(boot_protocol, int) or boot_protocol < 1:
            raise bad(f"has an invalid boot_protocol {boot_protocol!r}")
    created = data.get("created", "")
    if not isinstance(created, str) or len(created) > 64:
        raise bad("has an invalid created time")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise bad("has a metadata field that is not an object")
    return BundleManifest(
        kind=kind,  # type: ignore[arg-type]  # checked against PAYLOAD_FILES by the caller
        name=name,
        version=version,
        kernel_ref=kernel_ref,
        boot_protocol=boot_protocol,
        created=created,
        files=_parse_files(data.get("files"), kind, bad),
        metadata=metadata,
        raw=raw,
    )


def _parse_files(files: Any, kind: str, bad: Any) -> dict[str, FileDigest]:
    expected = PAYLOAD_FILES[kind]
    if not isinstance(files, dict) or sorted(files) != sorted(expected):
        listed = sorted(files) if isinstance(files, dict) else files
        raise bad(f"lists files {listed!r}, expected exactly {list(expected)!r}")
    out: dict[str, FileDigest] = {}
    for name in expected:
        entry = files[name]
        if not isinstance(entry, dict):
            raise bad(f"has no digest for {name}")
        sha256, size = entry.get("sha256"), entry.get("size")
        if not isinstance(sha256, str) or not SHA256_RE.match(sha256):
            raise bad(f"has an invalid sha256 for {name}")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
            raise bad(f"has an invalid size for {name} (at most {MAX_FILE_SIZE} bytes)")
        out[name] = FileDigest(sha256=sha256, size=size)
    return out
