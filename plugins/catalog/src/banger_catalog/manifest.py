"""The ``manifest.json`` at the head of every bundle: the format is the contract's (banger_hookspecs.bundle).

This module only turns the contract's :class:`~banger_hookspecs.bundle.ManifestError`
into a :class:`BundleError` that names the bundle and says what the user can do.
"""

from __future__ import annotations

from banger_catalog.errors import BundleError
from banger_hookspecs import bundle
from banger_hookspecs.bundle import BUNDLE_FORMAT, BundleManifest


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
    try:
        return bundle.parse_manifest(raw, kind)
    except bundle.UnsupportedFormat as exc:
        raise BundleError(
            f"{label}: bundle format {exc.found!r} is not format {BUNDLE_FORMAT}: upgrade banger to use it"
        ) from None
    except bundle.ManifestError as exc:
        raise BundleError(f"{label}: bundle manifest {exc}; the bundle is corrupt, tell its publisher") from None
