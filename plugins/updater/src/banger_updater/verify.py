"""What makes a downloaded release trustworthy, checked in this order (docs/updating.md, "Updating").

1. The manifest's Sigstore bundle proves the configured identity and issuer signed exactly
   the manifest's bytes, under the pinned (or configured) trusted root: banger_core.trust.
2. Only then is the manifest parsed, and it must be the release that was asked for (its
   signed version is the one in its URL: an old signed manifest served as a new version is
   refused) and built for this interpreter and platform.
3. The artifact's size and sha256 must be the verified manifest's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from banger_core.common.errors import BangerError
from banger_updater.release import (
    MAX_MANIFEST_BYTES,
    Artifact,
    Manifest,
    Version,
    host_platform,
    host_python,
    manifest_path,
    signature_path,
)

if TYPE_CHECKING:
    from banger_core.trust import SigningPolicy
    from banger_updater.fetch import ReleaseSource

_READ_CHUNK = 1 << 20


def signing_policy(config: Mapping[str, Any]) -> SigningPolicy:
    """The release signer config.toml names (``update_identity``, ``update_issuer``, ``sigstore_trusted_root``)."""
    from banger_core.trust import SigningPolicy, policy_root_from_config

    try:
        return SigningPolicy(
            identity=str(config["update_identity"]),
            issuer=str(config["update_issuer"]),
            trusted_root=policy_root_from_config(config),
        )
    except ValueError as exc:
        raise BangerError(f"update_identity/update_issuer: {exc}: set both in config.toml") from None


def verified_manifest(source: ReleaseSource, version: Version, policy: SigningPolicy) -> Manifest:
    """Release ``version``'s manifest, once its signature and contents check out (else one line)."""
    from banger_core.trust import MAX_BUNDLE_BYTES, verify_bytes

    data = source.read(manifest_path(version), MAX_MANIFEST_BYTES)
    bundle = source.read(signature_path(version), MAX_BUNDLE_BYTES)
    verify_bytes(data, bundle, policy, subject=f"release {version}'s manifest.json")
    manifest = Manifest.from_json(data, source.url(manifest_path(version)))
    if manifest.version != version:
        raise BangerError(
            f"{source.url(manifest_path(version))} is signed for {manifest.version}, not {version}: the release "
            "host serves another release's manifest under this version (refused: it could force an old release)"
        )
    if (manifest.python, manifest.platform) != (host_python(), host_platform()):
        raise BangerError(
            f"release {version} is built for {manifest.python} {manifest.platform}, this host runs "
            f"{host_python()} {host_platform()}: install banger from source (docs/install.md)"
        )
    return manifest


def check_artifact(path: Path, artifact: Artifact, url: str) -> None:
    """``path`` is ``artifact`` byte for byte (size, then sha256); else it is removed and one line raised."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size != artifact.size or digest.hexdigest() != artifact.sha256:
        path.unlink()
        found = f"{size} bytes" if size != artifact.size else f"sha256 {digest.hexdigest()[:16]}..."
        raise BangerError(
            f"{url}: {found}, the signed manifest says {artifact.size} bytes, sha256 {artifact.sha256[:16]}...: "
            "the file is not the release's (removed; a later run downloads it again)"
        )
