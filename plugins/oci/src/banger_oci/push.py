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

A small document (the catalog.json that ``scripts/publish_catalog.py --registry``
publishes) goes up the same way as a one-layer artifact of its own type
(:func:`publish_document`), and comes back through the driver's
:meth:`OciPublisher.fetch_document`, which the core offers every plugin as
``ctx.fetch_document`` (the catalog reads ``catalog_url = "oci://..."`` with it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from banger_hookspecs import FetchedDocument, PluginContext, Progress, PublishedArtifact
from banger_hookspecs.bundle import BundleManifest
from banger_oci.artifact import EMPTY_CONFIG, canonical_json, document_manifest, manifest_document, read_document
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

    def fetch_document(self, reference: str, *, artifact_type: str, media_type: str, max_size: int) -> FetchedDocument:
        """The one ``media_type`` layer of the ``artifact_type`` artifact at ``reference`` (a tag or a digest).

        Every digest is checked (the manifest's against a pinned reference, the layer's against the manifest).
        """
        parsed = parse_reference(reference)
        credentials = configured_credentials(self._ctx.config, parsed.registry)
        with RegistryClient(parsed, credentials) as client:
            fetched = client.fetch_manifest(_Quiet())
            data = read_document(client, fetched, artifact_type, media_type, max_size)
        return FetchedDocument(
            data=data, reference=f"{parsed.registry}/{parsed.repository}@{fetched.digest}", digest=fetched.digest
        )


class _Quiet:
    """A progress sink that drops everything: fetching a small document has no phases worth showing."""

    def step(self, message: str) -> None:
        pass

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        pass


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


def publish_document(
    data: bytes,
    artifact_type: str,
    media_type: str,
    target: str,
    credentials: Credentials | None,
    progress: Progress,
) -> PublishedArtifact:
    """Push ``data`` to ``target`` (``REGISTRY/REPO:TAG``) as a one-layer ``artifact_type`` artifact.

    Raises:
        BadReference, AuthError, RegistryError, SourceUnavailable: as :func:`publish_bundle`.
    """
    reference = parse_reference(target)
    if reference.digest is not None:
        raise BadReference(f"{target!r}: push to a tag (REGISTRY/REPO:TAG); the digest is what the push answers with")
    tag = reference.tag or "latest"
    manifest = canonical_json(document_manifest(artifact_type, media_type, data))
    uploaded = 0
    with RegistryClient(reference, credentials) as client:
        for blob in (data, EMPTY_CONFIG):
            digest = sha256_digest(blob)
            if not client.has_blob(digest):
                progress.step(f"uploading {digest[:19]} ({len(blob)} bytes)")
                client.upload_blob(digest, len(blob), partial(bytes, blob))
                uploaded += len(blob)
        progress.step(f"tagging {reference.registry}/{reference.repository}:{tag}")
        digest = client.put_manifest(tag, manifest, OCI_MANIFEST)
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
