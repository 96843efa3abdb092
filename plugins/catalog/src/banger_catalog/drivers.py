"""The ``catalog`` image source and kernel provider: a catalog entry in, a verified artifact out.

Order of the checks in a pull: the entry must name who signed it; its
signature (``URL.sigstore.json``) is fetched first (none published: the
bundle is unsigned, ``SourceUnavailable``, so the core falls back to a local
build); then the bundle is downloaded and its size and sha256 checked against
the catalog; then the signature is checked over those bytes by the core
(``ctx.verify_signature``, sigstore-python with banger's pinned trust root);
only then is it unpacked. A refused signature deletes the download and raises
``BundleError``: nothing reaches ``dest`` and the core stores nothing.
Config ``catalog_allow_unsigned`` turns the signature checks off for the
catalogs it lists, with a warning on each pull.
"""

from __future__ import annotations

import time
from pathlib import Path

from banger_catalog.catalog import Catalog, CatalogEntry, SigningPolicy, load_catalog
from banger_catalog.download import download_lock, fetch_bundle, fetch_signature, remove_download
from banger_catalog.errors import BundleError, CatalogError
from banger_catalog.policy import ALLOW_UNSIGNED_KEY, unsigned_allowed
from banger_hookspecs import (
    ImageArtifact,
    ImageListing,
    KernelArtifact,
    PluginContext,
    Progress,
    PublishedElsewhere,
    SignatureRefused,
    SourceUnavailable,
)
from banger_hookspecs.bundle import BundleKind, BundleManifest
from banger_hookspecs.bundle_reader import extract_bundle
from banger_hookspecs.names import is_image_name

PLUGIN_NAME = "catalog"
#: How long a loaded (or unreachable) catalog is reused: ``claims`` and ``pull`` follow each other.
CATALOG_TTL = 60.0
DEFAULT_TIMEOUT = 30.0


class _CatalogDriver:
    """What the image source and the kernel provider share: the catalog, the download, the extraction."""

    kind: BundleKind

    def __init__(self, ctx: PluginContext, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._ctx = ctx
        self._timeout = timeout
        self._loaded: tuple[float, Catalog | Exception] | None = None

    @property
    def downloads_dir(self) -> Path:
        """Where bundles are downloaded (``.partial`` files survive here for resuming)."""
        return self._ctx.plugin_dir(PLUGIN_NAME, cache=True) / "downloads"

    def catalog(self) -> Catalog:
        """The configured catalog, reused for :data:`CATALOG_TTL` seconds (failures too)."""
        now = time.monotonic()
        if self._loaded is None or now - self._loaded[0] > CATALOG_TTL:
            result: Catalog | Exception
            try:
                result = load_catalog(
                    self._ctx.config.get("catalog_url"), timeout=self._timeout, fetch_document=self._ctx.fetch_document
                )
            except (SourceUnavailable, CatalogError) as exc:
                result = exc
            self._loaded = (now, result)
        result = self._loaded[1]
        if isinstance(result, Exception):
            raise type(result)(*result.args)  # a fresh instance: no traceback piling up across calls
        return result

    def claims(self, ref: str) -> bool:
        """True for a name the catalog lists (or any plain name while the catalog is unreachable)."""
        if not is_image_name(ref):
            return False
        try:
            return self.catalog().find(self.kind, ref) is not None
        except (SourceUnavailable, CatalogError):
            return True  # pull() explains why it cannot serve it

    def _pull_bundle(
        self, ref: str, dest: Path, progress: Progress
    ) -> tuple[CatalogEntry, BundleManifest, SigningPolicy | None]:
        """Download, check and unpack ``ref``; returns its entry, its manifest and the signer checked (if any)."""
        catalog = self.catalog()
        entry = catalog.find(self.kind, ref)
        if entry is None:
            raise SourceUnavailable(f"{catalog.location} lists no {self.kind} named {ref!r}")
        if not entry.published:
            raise SourceUnavailable(f"{self.kind} {ref} is listed in {catalog.location} but not published yet")
        if entry.oci_reference is not None:
            raise PublishedElsewhere(entry.oci_reference)  # the core pulls it through the oci provider
        label = f"catalog {self.kind} {ref}"
        signing = self._signing_policy(catalog, entry, label, progress)
        signature = fetch_signature(entry, label, timeout=self._timeout) if signing is not None else None

        def matches_entry(manifest: BundleManifest) -> None:
            if manifest.name != entry.name or manifest.kernel_ref != entry.kernel_ref:
                wants = f" wanting kernel {manifest.kernel_ref!r}" if self.kind == "image" else ""
                raise BundleError(
                    f"{label}: the bundle holds {manifest.kind} {manifest.name!r}{wants}, not what the catalog "
                    "lists; it was rejected, tell the catalog's publisher"
                )

        downloads = self.downloads_dir
        with download_lock(downloads):
            bundle = fetch_bundle(entry, downloads, progress, label, timeout=self._timeout)
            try:
                if signing is not None and signature is not None:
                    self._check_signature(bundle, signature, signing, entry, label, progress)
                progress.step(f"unpacking {label}")
                manifest = extract_bundle(bundle, self.kind, dest, progress, label, check=matches_entry)
            finally:
                remove_download(bundle, downloads)
        return entry, manifest, signing

    def _signing_policy(
        self, catalog: Catalog, entry: CatalogEntry, label: str, progress: Progress
    ) -> SigningPolicy | None:
        """Who must have signed ``entry``'s bundle; None when this catalog's signature checks are off."""
        if unsigned_allowed(self._ctx.config):
            warning = (
                f"warning: {label}: signature not checked, {ALLOW_UNSIGNED_KEY} lists {catalog.location}; "
                "anyone who can change that catalog or its bundles chooses what your VMs boot"
            )
            progress.step(warning)  # a step, not a log line: the CLI shows those only with -v
            self._ctx.logger.warning("%s", warning)
            return None
        if entry.signing is None:
            raise SourceUnavailable(
                f'{label} is not signed: {catalog.location} names no signer for it (no "signing" policy); '
                "ask the catalog's publisher to sign its bundles (scripts/publish_catalog.py --signing-identity), "
                "or accept this catalog's unsigned bundles with catalog_allow_unsigned"
            )
        return entry.signing

    def _check_signature(
        self,
        bundle: Path,
        signature: bytes,
        signing: SigningPolicy,
        entry: CatalogEntry,
        label: str,
        progress: Progress,
    ) -> None:
        progress.step(f"checking the signature of {label} ({signing.identity})")
        try:
            self._ctx.verify_signature(
                bundle,
                signature,
                identity=signing.identity,
                issuer=signing.issuer,
                subject=entry.url.rsplit("/", 1)[-1],
            )
        except SignatureRefused as exc:
            # The core's line names the failed check and its fix; this adds which bundle and what was undone.
            raise BundleError(f"{label}: {exc}; nothing from {entry.url} was unpacked or kept") from None

    @staticmethod
    def _metadata(entry: CatalogEntry, manifest: BundleManifest, signing: SigningPolicy | None) -> dict[str, object]:
        return {
            **manifest.metadata,
            "created": manifest.created,
            "origin": entry.url,
            "bundle_sha256": entry.sha256,
            "signed_by": signing.identity if signing is not None else None,  # None: not checked (opted out)
        }


class CatalogImageSource(_CatalogDriver):
    """Images from catalog bundles (an :class:`~banger_hookspecs.ImageSourceDriver`)."""

    kind: BundleKind = "image"

    def available(self) -> list[ImageListing]:
        """Published image entries of the catalog (none while it is unreachable)."""
        try:
            catalog = self.catalog()
        except (SourceUnavailable, CatalogError) as exc:
            self._ctx.logger.warning("catalog: cannot list images: %s", exc)
            return []
        return [
            ImageListing(name=e.name, description=e.description, source=PLUGIN_NAME)
            for e in catalog.entries
            if e.kind == "image" and e.published
        ]

    def pull(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        """Download, verify and unpack image ``ref`` into ``dest`` (``rootfs.ext4`` + ``manifest.json``)."""
        entry, manifest, signing = self._pull_bundle(ref, dest, progress)
        rootfs = manifest.files["rootfs.ext4"]
        return ImageArtifact(
            name=manifest.name,
            version=manifest.version,
            rootfs=dest / "rootfs.ext4",
            kernel_ref=manifest.kernel_ref,
            sha256=rootfs.sha256,
            size=rootfs.size,
            metadata=self._metadata(entry, manifest, signing),
        )


class CatalogKernelProvider(_CatalogDriver):
    """Kernels from catalog bundles (a :class:`~banger_hookspecs.KernelProviderDriver`)."""

    kind: BundleKind = "kernel"

    def pull(self, ref: str, dest: Path, progress: Progress) -> KernelArtifact:
        """Download, verify and unpack kernel ``ref`` into ``dest`` (``vmlinux``, ``initrd``, ``manifest.json``)."""
        entry, manifest, signing = self._pull_bundle(ref, dest, progress)
        return KernelArtifact(
            ref=manifest.name,
            version=manifest.version,
            vmlinux=dest / "vmlinux",
            initrd=dest / "initrd",
            boot_protocol=manifest.boot_protocol,
            sha256={name: digest.sha256 for name, digest in manifest.files.items()},
            metadata=self._metadata(entry, manifest, signing),
        )
