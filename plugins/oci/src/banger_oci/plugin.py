"""Entry point of banger-oci: images (and banger's own kernel artifacts) from OCI registries, and pushes to them.

Registration is cheap: httpx and the flattener are imported only when the core
builds the driver.
"""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import (
    ArtifactPublisher,
    ArtifactPublisherDriver,
    ConfigOption,
    ImageSource,
    ImageSourceDriver,
    KernelProvider,
    KernelProviderDriver,
    PluginContext,
    hookimpl,
)

#: References and plain names never overlap (see ``banger_oci.reference.claims``); between the
#: catalog (10) and the local builders (60) so an explicit ``--source`` is never needed.
PRIORITY = 30
#: The catalog's generic kernel (plugins/catalog's catalog.json), which boots any image banger made bootable.
DEFAULT_KERNEL_REF = "generic-6.1"
DEFAULT_CACHE_MAX = 10 << 30


def make_image_source(ctx: PluginContext) -> ImageSourceDriver:
    """Build the ``oci`` image source driver."""
    from banger_oci.source import OciImageSource

    return OciImageSource(ctx)


def make_kernel_provider(ctx: PluginContext) -> KernelProviderDriver:
    """Build the ``oci`` kernel provider driver (kernels pushed with ``banger kernel push``)."""
    from banger_oci.kernels import OciKernelProvider

    return OciKernelProvider(ctx)


def make_publisher(ctx: PluginContext) -> ArtifactPublisherDriver:
    """Build the ``oci`` artifact publisher driver."""
    from banger_oci.push import OciPublisher

    return OciPublisher(ctx)


@hookimpl
def banger_image_sources() -> Iterable[ImageSource]:
    return [
        ImageSource(
            name="oci",
            description="pull an image from any OCI registry (alpine:3.20, ghcr.io/org/repo@sha256:...)",
            factory=make_image_source,
            priority=PRIORITY,
        )
    ]


@hookimpl
def banger_kernel_providers() -> Iterable[KernelProvider]:
    return [
        KernelProvider(
            name="oci",
            description="pull a kernel published with `banger kernel push` (REGISTRY/REPO:TAG or @sha256:...)",
            factory=make_kernel_provider,
            priority=PRIORITY,
        )
    ]


@hookimpl
def banger_artifact_publishers() -> Iterable[ArtifactPublisher]:
    return [
        ArtifactPublisher(
            name="oci",
            description="push an image or kernel to any OCI registry as banger's artifact (REGISTRY/REPO:TAG)",
            factory=make_publisher,
        )
    ]


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption(
            "oci_auth_file",
            "path",
            help="Docker-style config.json with registry credentials (default: $DOCKER_CONFIG/config.json, "
            "else ~/.docker/config.json)",
        ),
        ConfigOption(
            "oci_cache_max",
            "size",
            default=DEFAULT_CACHE_MAX,
            help="size cap of the OCI blob cache; least recently used blobs are deleted after a pull",
        ),
        ConfigOption(
            "oci_kernel_ref",
            "str",
            default=DEFAULT_KERNEL_REF,
            help="kernel that images pulled from OCI registries boot with",
        ),
    ]
