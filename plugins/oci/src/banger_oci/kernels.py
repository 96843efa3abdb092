"""The ``oci`` kernel provider: kernels published to a registry with ``banger kernel push``.

``banger kernel pull REGISTRY/REPO:TAG`` (or ``@sha256:...``) resolves the
reference, accepts only banger's kernel artifact (:mod:`banger_oci.artifact`),
downloads its bundle into the blob cache (digest verified; deleted once unpacked) and unpacks it with
every file checked against the bundle's manifest. The kernel keeps the ref it
was published under (``generic-6.1``), so images naming it find it.
"""

from __future__ import annotations

from pathlib import Path

from banger_hookspecs import KernelArtifact, PluginContext, Progress
from banger_oci.artifact import artifact_kind, pull_bundle
from banger_oci.auth import configured_credentials
from banger_oci.reference import claims, parse_reference
from banger_oci.registry import RegistryClient, RegistryError
from banger_oci.source import OciImageSource


class OciKernelProvider:
    """Kernels from OCI registries (a :class:`~banger_hookspecs.KernelProviderDriver`)."""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx
        self._images = OciImageSource(ctx)  # for its blob cache: one cache, one lock, one size cap

    def claims(self, ref: str) -> bool:
        """True for registry references, never for plain kernel refs such as ``generic-6.1``."""
        return claims(ref)

    def pull(self, ref: str, dest: Path, progress: Progress) -> KernelArtifact:
        """Write ``vmlinux``, ``initrd`` and ``manifest.json`` of the kernel artifact ``ref`` into ``dest``."""
        reference = parse_reference(ref)
        cache = self._images.cache
        credentials = configured_credentials(self._ctx.config, reference.registry)
        with RegistryClient(reference, credentials) as client, cache.locked():
            fetched = client.fetch_manifest(progress)
            if artifact_kind(fetched) is None:
                raise RegistryError(
                    f"{fetched.what} is not a banger kernel (a container image?): kernels come from "
                    "`banger kernel push`, see docs/oci-import.md"
                )
            pulled = pull_bundle(client, fetched, "kernel", cache, dest, progress)
            cache.evict()
        manifest = pulled.manifest
        return KernelArtifact(
            ref=manifest.name,
            version=manifest.version,
            vmlinux=dest / "vmlinux",
            initrd=dest / "initrd",
            boot_protocol=manifest.boot_protocol,
            sha256={name: digest.sha256 for name, digest in manifest.files.items()},
            metadata={**pulled.metadata, "reference": ref},
        )
