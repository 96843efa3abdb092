"""The ``oci`` image source driver: resolve, fetch into the blob cache, build the root filesystem.

``pull("alpine:3.20", dest, progress)`` resolves the reference to its linux/amd64
manifest, downloads every layer into the content-addressed cache (verified),
and hands the layers with their ``diff_ids`` to
:func:`banger_oci.ext4.build_rootfs`, which flattens them into
``dest/rootfs.ext4`` made bootable by banger. A reference to banger's own
artifact (``banger image push``, :mod:`banger_oci.artifact`) is not flattened:
its bundle is downloaded, verified and unpacked as it was published, under the
name it was published with. The artifact's metadata records
the reference and the manifest digest, so ``banger image show`` tells where an
image came from and ``@sha256:`` pins can be reproduced.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from banger_hookspecs import ImageArtifact, ImageIdentity, ImageListing, PluginContext, Progress
from banger_oci.artifact import artifact_kind, pull_bundle
from banger_oci.auth import configured_credentials
from banger_oci.blobs import BlobCache
from banger_oci.plugin import DEFAULT_CACHE_MAX, DEFAULT_KERNEL_REF
from banger_oci.reference import Reference, claims, parse_reference
from banger_oci.registry import RegistryClient

PLUGIN_NAME = "oci"


class OciImageSource:
    """Images from OCI registries (an :class:`~banger_hookspecs.ImageSourceDriver`)."""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx

    @property
    def cache(self) -> BlobCache:
        """The blob cache under the plugin's cache directory, capped by ``oci_cache_max``."""
        cap = self._ctx.config.get("oci_cache_max")
        return BlobCache(
            self._ctx.plugin_dir(PLUGIN_NAME, cache=True) / "blobs",
            cap if isinstance(cap, int) else DEFAULT_CACHE_MAX,
        )

    def claims(self, ref: str) -> bool:
        """True for registry references (``alpine:3.20``, ``host:5000/r@sha256:...``), never for plain names."""
        return claims(ref)

    def available(self) -> list[ImageListing]:
        """Nothing to list: a registry holds whatever the user names."""
        return []

    def _client(self, reference: Reference) -> RegistryClient:
        return RegistryClient(reference, configured_credentials(self._ctx.config, reference.registry))

    def identify(self, ref: str, progress: Progress) -> ImageIdentity:
        """The image name and the digest ``ref`` resolves to now: one manifest HEAD (none for a ``@sha256:`` pin).

        The digest is the one :meth:`pull` records as the artifact's ``digest``:
        the index's when the reference names an image index, else the manifest's.
        A banger artifact (``image push``) is stored under its published name,
        which the core finds by the reference it was pulled with.
        """
        reference = parse_reference(ref)
        if reference.digest is not None:
            return ImageIdentity(reference.image_name(), reference.digest)
        progress.step(f"asking {reference.registry} which image {reference} names")
        with self._client(reference) as client:
            return ImageIdentity(reference.image_name(), client.current_digest())

    def pull(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        """Write ``dest/rootfs.ext4`` for reference ``ref``; see the module docstring."""
        return self._pull(ref, dest, progress, with_sshd=False)

    def pull_with_sshd(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        """:meth:`pull`, and an image without sshd installs it at first boot (``image pull --with-sshd``)."""
        return self._pull(ref, dest, progress, with_sshd=True)

    def _pull(self, ref: str, dest: Path, progress: Progress, *, with_sshd: bool) -> ImageArtifact:
        reference = parse_reference(ref)
        cache = self.cache
        image = dest / "rootfs.ext4"
        with self._client(reference) as client, cache.locked():
            fetched = client.fetch_manifest(progress)
            if artifact_kind(fetched) is not None:  # pushed by `banger image push`: a bundle, not layers
                pulled = pull_bundle(client, fetched, "image", cache, dest, progress)
                cache.evict()
                rootfs = pulled.manifest.files["rootfs.ext4"]
                return ImageArtifact(
                    name=pulled.manifest.name,
                    version=pulled.manifest.version,
                    rootfs=image,
                    kernel_ref=pulled.manifest.kernel_ref,
                    sha256=rootfs.sha256,
                    size=rootfs.size,
                    metadata={**pulled.metadata, "reference": ref},
                    digest=fetched.index_digest or fetched.digest,
                )
            resolved = client.resolve(progress, fetched)
            paths = []
            for number, blob in enumerate(resolved.layers, 1):
                label = f"layer {number}/{len(resolved.layers)} {blob.digest[:19]}"
                progress.step(f"downloading {label} ({blob.size} bytes)")
                paths.append(cache.fetch(blob, client, progress, label))
            # The flattener is the heavy part: imported once every layer is here and verified.
            from banger_oci.ext4 import build_rootfs
            from banger_oci.layers import Layer

            layers = [
                Layer(path=path, media_type=blob.media_type, diff_id=diff_id)
                for path, blob, diff_id in zip(paths, resolved.layers, resolved.diff_ids, strict=True)
            ]
            progress.step(f"building the root filesystem of {reference}")
            size = build_rootfs(layers, image, progress, with_sshd=with_sshd)
            cache.evict(keep=[blob.digest for blob in resolved.layers])
        progress.step("hashing the root filesystem")
        kernel_ref = self._ctx.config.get("oci_kernel_ref")
        return ImageArtifact(
            name=reference.image_name(),
            version=resolved.manifest_digest[:19],
            rootfs=image,
            kernel_ref=kernel_ref if isinstance(kernel_ref, str) else DEFAULT_KERNEL_REF,
            sha256=_sha256(image),
            size=size,
            digest=resolved.index_digest or resolved.manifest_digest,
            metadata={
                "origin": str(reference),
                "reference": ref,
                "manifest_digest": resolved.manifest_digest,
                "index_digest": resolved.index_digest,
                "manifest_media_type": resolved.manifest_media_type,
                "config_digest": resolved.config_digest,
                "platform": "linux/amd64",
                "layers": [blob.digest for blob in resolved.layers],
                **({"with_sshd": True} if with_sshd else {}),
            },
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
