"""banger's own OCI artifact: an image or kernel bundle (docs/bundles.md) as the one layer of an OCI manifest.

What ``banger image push`` / ``banger kernel push`` publish, and what a pull of
such a reference recognises (by ``artifactType``, or the config media type for
registries that drop that field) and unpacks instead of flattening container
layers::

    {"schemaVersion": 2,
     "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.banger.image.v1",
     "config": {"mediaType": "application/vnd.banger.bundle.manifest.v1+json", ...},   # the bundle's manifest.json
     "layers": [{"mediaType": "application/vnd.banger.image.bundle.v1.tar+zstd", ...}], # the bundle itself
     "annotations": {"org.opencontainers.image.created": ..., "dev.banger.name": ..., ...}}

The config blob is the bundle's own ``manifest.json``, so a pull knows what it
gets (kind, name, kernel, payload digests) before downloading the bundle, and
the bundle's first member must be exactly that document. Every blob is checked
against its digest, and the bundle is read by the contract's hostile-archive-safe
reader (:mod:`banger_hookspecs.bundle_reader`), which checks every payload file
against the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from banger_hookspecs import Progress
from banger_hookspecs.bundle import BundleError, BundleKind, BundleManifest
from banger_oci.blobs import BlobCache
from banger_oci.reference import Reference
from banger_oci.registry import (
    OCI_MANIFEST,
    FetchedManifest,
    RegistryClient,
    RegistryError,
    parse_descriptor,
    sha256_digest,
)

#: ``artifactType`` of a published image or kernel.
ARTIFACT_TYPES: dict[BundleKind, str] = {
    "image": "application/vnd.banger.image.v1",
    "kernel": "application/vnd.banger.kernel.v1",
}
#: Media type of the config blob: the bundle's ``manifest.json``.
CONFIG_MEDIA_TYPE = "application/vnd.banger.bundle.manifest.v1+json"
#: Media type of the one layer: the tar+zstd bundle.
LAYER_MEDIA_TYPES: dict[BundleKind, str] = {
    "image": "application/vnd.banger.image.bundle.v1.tar+zstd",
    "kernel": "application/vnd.banger.kernel.bundle.v1.tar+zstd",
}
ANNOTATION_PREFIX = "dev.banger."


def artifact_kind(fetched: FetchedManifest) -> BundleKind | None:
    """``image`` or ``kernel`` when ``fetched`` is a banger artifact, None for anything else (a container image)."""
    document = fetched.document
    for kind, artifact_type in ARTIFACT_TYPES.items():
        if document.get("artifactType") == artifact_type:
            return kind
    config = document.get("config")
    if not isinstance(config, dict) or config.get("mediaType") != CONFIG_MEDIA_TYPE:
        return None
    # A registry may drop artifactType (image-spec 1.1): the bundle layer's media type says the kind.
    layers = document.get("layers")
    first = layers[0] if isinstance(layers, list) and layers and isinstance(layers[0], dict) else {}
    for kind, layer_type in LAYER_MEDIA_TYPES.items():
        if first.get("mediaType") == layer_type:
            return kind
    raise RegistryError(f"{fetched.what} is a banger artifact of no kind this banger knows: upgrade banger")


def manifest_document(
    manifest: BundleManifest, bundle_digest: str, bundle_size: int, config_digest: str
) -> dict[str, object]:
    """The OCI manifest that publishes ``manifest``'s bundle (see the module docstring)."""
    annotations = {
        "org.opencontainers.image.created": manifest.created,
        "org.opencontainers.image.title": manifest.name,
        "org.opencontainers.image.version": manifest.version,
        f"{ANNOTATION_PREFIX}kind": manifest.kind,
        f"{ANNOTATION_PREFIX}name": manifest.name,
        f"{ANNOTATION_PREFIX}version": manifest.version,
    }
    if manifest.kind == "image":
        annotations[f"{ANNOTATION_PREFIX}kernel_ref"] = manifest.kernel_ref or ""
    else:
        annotations[f"{ANNOTATION_PREFIX}boot_protocol"] = str(manifest.boot_protocol)
    for name, digest in manifest.files.items():
        annotations[f"{ANNOTATION_PREFIX}{name.replace('.', '_')}.sha256"] = digest.sha256
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPES[manifest.kind],
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(manifest.raw)},
        "layers": [
            {
                "mediaType": LAYER_MEDIA_TYPES[manifest.kind],
                "digest": bundle_digest,
                "size": bundle_size,
                "annotations": {"org.opencontainers.image.title": f"{manifest.name}.tar.zst"},
            }
        ],
        "annotations": annotations,
    }


@dataclass(frozen=True)
class PulledBundle:
    """A banger artifact unpacked into a directory.

    Attributes:
        manifest: the bundle's manifest (equal to the artifact's config blob).
        metadata: where it came from, for ``image show`` / ``kernel list``: reference, digests.
    """

    manifest: BundleManifest
    metadata: dict[str, object]


def pull_bundle(
    client: RegistryClient,
    fetched: FetchedManifest,
    kind: BundleKind,
    cache: BlobCache,
    dest: Path,
    progress: Progress,
) -> PulledBundle:
    """Download the bundle of artifact ``fetched`` (a ``kind`` artifact) and unpack it into ``dest``.

    Raises:
        RegistryError: the artifact is malformed or of another kind.
        BlobError: a blob does not match its digest (nothing of it is kept).
        BundleError: the bundle is hostile or does not match its manifest (``dest`` is left as it was).
    """
    from banger_hookspecs.bundle_reader import extract_bundle, parse_manifest

    what = fetched.what
    found = artifact_kind(fetched)
    if found != kind:
        wanted = "an image" if kind == "image" else "a kernel"
        raise RegistryError(f"{what} is a banger {found} artifact, not {wanted}: use `banger {found} pull`")
    config = parse_descriptor(fetched.document.get("config"), f"{what}: config")
    layers = fetched.document.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise RegistryError(f"{what}: a banger artifact has exactly one layer (its bundle)")
    layer = parse_descriptor(layers[0], f"{what}: bundle layer")
    if config.media_type != CONFIG_MEDIA_TYPE or layer.media_type != LAYER_MEDIA_TYPES[kind]:
        raise RegistryError(f"{what}: unexpected media types {config.media_type!r} / {layer.media_type!r}")
    label = f"{kind} artifact {what}"
    announced = parse_manifest(client.read_blob(config, f"{what} config"), kind, label)
    progress.step(f"downloading {kind} {announced.name} ({layer.size} bytes)")
    bundle = cache.fetch(layer, client, progress, f"bundle {layer.digest[:19]}")

    def matches_config(inside: BundleManifest) -> None:
        if inside.raw != announced.raw:
            raise BundleError(
                f"{label}: the bundle's manifest.json is not the artifact's config; it was rejected, tell its publisher"
            )

    progress.step(f"unpacking {kind} {announced.name}")
    try:
        manifest = extract_bundle(bundle, kind, dest, progress, label, check=matches_config)
    finally:
        # The store keeps the unpacked files: a second copy in the cache would only double the disk used.
        bundle.unlink(missing_ok=True)
    return PulledBundle(
        manifest=manifest,
        metadata={
            **manifest.metadata,
            "created": manifest.created,
            "origin": _pinned(client.ref, fetched.digest),
            "reference": str(client.ref),
            "manifest_digest": fetched.digest,
            "index_digest": fetched.index_digest,
            "artifact_type": ARTIFACT_TYPES[kind],
            "bundle_digest": layer.digest,
        },
    )


def _pinned(ref: Reference, digest: str) -> str:
    return f"{ref.registry}/{ref.repository}@{digest}"


def canonical_json(document: dict[str, object]) -> bytes:
    """The bytes a manifest is published as (its digest is taken over exactly these)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


#: The config of a document artifact (image-spec 1.1's empty descriptor): the ``artifactType`` says what it is.
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"


def document_manifest(artifact_type: str, media_type: str, data: bytes) -> dict[str, object]:
    """The OCI manifest of a one-document artifact (a catalog.json): empty config, the document as its layer."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(EMPTY_CONFIG),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [{"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}],
    }


def read_document(
    client: RegistryClient, fetched: FetchedManifest, artifact_type: str, media_type: str, max_size: int
) -> bytes:
    """The one ``media_type`` layer of ``fetched`` if it is an ``artifact_type`` artifact, digest checked.

    Raises:
        RegistryError: another kind of artifact (or a container image), a layer over ``max_size``
            bytes, or bytes that do not match the layer's digest.
    """
    what = fetched.what
    found = fetched.document.get("artifactType")
    if found != artifact_type:
        if not isinstance(found, str):
            raise RegistryError(f"{what} is not a {artifact_type} artifact (a container image?): check the reference")
        raise RegistryError(f"{what} is a {found} artifact, not a {artifact_type} one: check the reference")
    layers = fetched.document.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise RegistryError(f"{what}: a {artifact_type} artifact has exactly one layer")
    layer = parse_descriptor(layers[0], f"{what}: layer")
    if layer.media_type != media_type:
        raise RegistryError(f"{what}: its layer is {layer.media_type!r}, not {media_type}: refused")
    if layer.size > max_size:
        raise RegistryError(f"{what}: its layer is {layer.size} bytes, more than the {max_size} allowed: refused")
    return client.read_blob(layer, f"{what}: layer {layer.digest[:19]}")
