"""Entry point of banger-catalog: images and kernels from tar+zstd bundles.

Registrations are cheap: the drivers (httpx, zstandard) are imported only when
the core builds one.
"""

from __future__ import annotations

from collections.abc import Iterable

from banger_catalog.policy import ALLOW_UNSIGNED_KEY, unsigned_allowed
from banger_hookspecs import (
    CheckResult,
    ConfigOption,
    DoctorCheck,
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
        ConfigOption(
            ALLOW_UNSIGNED_KEY,
            "list[str]",
            default=[],
            help="catalog_url values whose bundles may be unsigned: signature checks off for them, a warning each pull",
        ),
    ]


def check_signatures(ctx: PluginContext) -> Iterable[CheckResult]:
    """One row: are the configured catalog's bundles signature-checked?"""
    catalog_url = ctx.config.get("catalog_url")
    catalog = f"catalog {catalog_url}" if catalog_url else "the embedded catalog"
    if unsigned_allowed(ctx.config):
        yield CheckResult(
            "catalog-signatures",
            "warn",
            f"signature checks are off for {catalog} ({ALLOW_UNSIGNED_KEY}): its bundles are unpacked unsigned",
            hint=f"remove it from {ALLOW_UNSIGNED_KEY} once its publisher signs the bundles",
        )
        return
    yield CheckResult("catalog-signatures", "ok", f"bundles from {catalog} must carry a valid Sigstore signature")


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="catalog", run=check_signatures)]


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
