"""The ``oci`` artifact publisher: push an image or kernel bundle to a registry as banger's OCI artifact.

``banger image push NAME REGISTRY/REPO:TAG`` ends here, once the core has
written the bundle from its store. The upload follows the distribution spec:
a ``HEAD`` per blob (a blob the repository already holds is not sent again),
a monolithic ``POST``+``PUT`` upload of each missing blob with its digest,
the bundle first and its manifest.json (the config blob) next, and the
manifest last, so a tag never names an artifact whose blobs are missing. Auth
is the pull's: anonymous, Basic, or a Bearer token asked with the challenge's
``push`` scope, credentials from the Docker-style ``config.json``. The answer
is the manifest digest: ``REG/REPO@sha256:...`` pins exactly what was pushed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from banger_hookspecs import PluginContext, Progress, PublishedArtifact
from banger_hookspecs.bundle import BundleManifest
from banger_oci.artifact import canonical_json, manifest_document
from banger_oci.auth import Credentials, configured_credentials
from banger_oci.reference import BadReference, claims, parse_reference
from banger_oci.registry import OCI_MANIFEST, RegistryClient, sha256_digest

_CHUNK = 1 << 20
_PROGRESS_EVERY = 4 << 20


class OciPublisher:
    """Publishes bundles to OCI registries (an :class:`~banger_hookspecs.ArtifactPublisherDriver`)."""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx

    def claims(self, target: str) -> bool:
        """True for registry references (``host:5000/team/golden:v1``), never for plain names."""
        return claims(target)

    def publish(self, bundle: Path, manifest: BundleManifest, target: str, progress: Progress) -> PublishedArtifact:
        """Push ``bundle`` as banger's artifact to ``target`` (``REGISTRY/REPO[:TAG]``); see the module docstring."""
        reference = parse_reference(target)
        credentials = configured_credentials(self._ctx.config, reference.registry)
        return publish_bundle(bundle, manifest, target, credentials, progress)


def publish_bundle(
    bundle: Path, manifest: BundleManifest, target: str, credentials: Credentials | None, progress: Progress
) -> PublishedArtifact:
    """Push ``bundle`` (whose manifest is ``manifest``) to ``target`` with ``credentials``; see the module docstring.

    Raises:
        BadReference: ``target`` is not ``REGISTRY/REPO[:TAG]`` (a digest is the push's answer, not its input).
        AuthError, RegistryError: the registry refused; the message is one sentence.
        SourceUnavailable: the registry cannot be reached.
    """
    reference = parse_reference(target)
    if reference.digest is not None:
        raise BadReference(f"{target!r}: push to a tag (REGISTRY/REPO:TAG); the digest is what the push answers with")
    tag = reference.tag or "latest"
    progress.step(f"hashing {bundle.name}")
    bundle_digest, bundle_size = _file_digest(bundle)
    config_digest = sha256_digest(manifest.raw)
    document = canonical_json(manifest_document(manifest, bundle_digest, bundle_size, config_digest))
    uploaded = 0
    with RegistryClient(reference, credentials) as client:
        for digest, size, body, what in (
            (bundle_digest, bundle_size, lambda: _read_chunks(bundle, bundle_size, progress), "bundle"),
            (config_digest, len(manifest.raw), lambda: manifest.raw, "manifest.json"),
        ):
            if client.has_blob(digest):
                progress.step(f"{what} {digest[:19]} is already in {reference.registry}/{reference.repository}")
                continue
            progress.step(f"uploading {what} {digest[:19]} ({size} bytes)")
            client.upload_blob(digest, size, body)
            uploaded += size
        progress.step(f"tagging {reference.registry}/{reference.repository}:{tag}")
        digest = client.put_manifest(tag, document, OCI_MANIFEST)
    return PublishedArtifact(
        reference=f"{reference.registry}/{reference.repository}@{digest}", digest=digest, uploaded=uploaded
    )


def _file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def _read_chunks(path: Path, size: int, progress: Progress) -> Iterator[bytes]:
    """The file's bytes for an upload body, reporting bytes sent; never more than the ``size`` declared."""
    done = reported = 0
    progress.advance(0, size)
    with open(path, "rb") as fh:
        while done < size and (chunk := fh.read(min(_CHUNK, size - done))):
            yield chunk
            done += len(chunk)
            if done - reported >= _PROGRESS_EVERY or done == size:
                progress.advance(done, size)
                reported = done
