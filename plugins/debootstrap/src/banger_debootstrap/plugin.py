"""Entry point of banger-debootstrap: builds images from recipes with debootstrap."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

from banger_hookspecs import (
    CheckResult,
    ConfigOption,
    DoctorCheck,
    ImageSource,
    ImageSourceDriver,
    PluginContext,
    hookimpl,
)


def _make_source(ctx: PluginContext) -> ImageSourceDriver:
    from banger_debootstrap.source import DebootstrapSource  # heavy work stays out of plugin loading

    return DebootstrapSource(ctx)


@hookimpl
def banger_image_sources() -> Iterable[ImageSource]:
    return [
        ImageSource(
            name="debootstrap",
            description="builds golden images locally from a recipe with debootstrap (needs root once)",
            factory=_make_source,
            priority=60,  # after the catalog: a download is faster than a build
        )
    ]


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption("debian_mirror", "str", help="Debian mirror URL (default: the host's apt sources)"),
        ConfigOption(
            "npm_registry",
            "str",
            help="npm registry URL for recipes' npm_binaries (default: npm's own setting, else registry.npmjs.org)",
        ),
        ConfigOption(
            "debootstrap_recipe_dirs",
            "list[str]",
            default=[],
            help="extra directories of image recipes (<dir>/<name>/recipe.toml), searched first",
        ),
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    tool = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    yield CheckResult(
        "debootstrap",
        "ok" if tool else "warn",
        f"debootstrap at {tool}" if tool else "debootstrap not found: images cannot be built locally",
        hint=None if tool else "install it: apt-get install debootstrap",
    )
    if tool and os.geteuid() != 0:
        yield CheckResult(
            "debootstrap-root",
            "info",
            "local image builds need root; cached builds and catalog images do not",
        )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="debootstrap", run=_check)]
