"""Entry point of banger-catalog: images and kernels from tar+zstd bundles.

Registrations are cheap: the drivers (httpx, zstandard) are imported only when
the core builds one.
"""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import (
    ConfigOption,
    ImageSource,
    ImageSourceDriver,
    KernelProvider,
    KernelProviderDriver,
    PluginContext,
    hookimpl,
)

#: Tried before the local builders: a download beats a build when one is published.
PRIORITY = 10


def make_image_source(ctx: PluginContext) -> ImageSourceDriver:
    """Build the ``catalog`` image source driver."""
    from banger_catalog.drivers import CatalogImageSource

    return CatalogImageSource(ctx)


def make_kernel_provider(ctx: PluginContext) -> KernelProviderDriver:
    """Build the ``catalog`` kernel provider driver."""
    from banger_catalog.drivers import CatalogKernelProvider

    return CatalogKernelProvider(ctx)


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption(
            "catalog_url",
            "str",
            help="URL, file or oci://REGISTRY/REPO@sha256:... of a catalog.json used instead of the embedded one",
        ),
    ]


@hookimpl
def banger_image_sources() -> Iterable[ImageSource]:
    return [
        ImageSource(
            name="catalog",
            description="download a published image bundle listed in banger's catalog",
            factory=make_image_source,
            priority=PRIORITY,
        )
    ]


@hookimpl
def banger_kernel_providers() -> Iterable[KernelProvider]:
    return [
        KernelProvider(
            name="catalog",
            description="download a published kernel bundle listed in banger's catalog",
            factory=make_kernel_provider,
            priority=PRIORITY,
        )
    ]
