"""Entry point of banger-image-example: what this plugin adds to banger.

banger imports this module on every CLI call (``banger --version`` included),
so it imports nothing but the contract; the driver module is imported only when
the core actually needs the image source (see :func:`_make_source`).
"""

from __future__ import annotations

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

#: The config.toml key this plugin reads (top level: prefix it with the plugin's own name).
HEADROOM_KEY = "dir_image_headroom"
DEFAULT_HEADROOM = 64 << 20


def _make_source(ctx: PluginContext) -> ImageSourceDriver:
    from banger_image_example.source import DirSource  # heavy work stays out of plugin loading

    return DirSource(ctx)


@hookimpl
def banger_image_sources() -> Iterable[ImageSource]:
    return [
        ImageSource(
            name="dir",
            description="dir:PATH turns a local directory tree into an image (mkfs.ext4 -d, no root needed)",
            factory=_make_source,
            # Only refs starting with "dir:" are claimed, so no other source competes for them.
            priority=40,
        )
    ]


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption(
            HEADROOM_KEY,
            "size",
            default=DEFAULT_HEADROOM,
            help="free space a dir: image gets beyond its tree's content, e.g. 256M (default 64M)",
        )
    ]


def _check_mkfs(ctx: PluginContext) -> Iterable[CheckResult]:
    from banger_image_example.source import MKFS_MIN_VERSION, find_mkfs, mkfs_version

    mkfs = find_mkfs()
    if mkfs is None:
        yield CheckResult(
            "dir-mkfs",
            "warn",
            "mkfs.ext4 not found: dir: images cannot be made",
            hint="install e2fsprogs (apt-get install e2fsprogs)",
        )
        return
    version = mkfs_version(mkfs)
    shown = ".".join(map(str, version)) if version else "(version unknown)"
    if version is not None and version < MKFS_MIN_VERSION:
        yield CheckResult(
            "dir-mkfs",
            "warn",
            f"mkfs.ext4 {shown} at {mkfs} cannot copy a directory (-d needs e2fsprogs 1.43)",
            hint="upgrade e2fsprogs",
        )
        return
    yield CheckResult("dir-mkfs", "ok", f"mkfs.ext4 {shown} at {mkfs}")


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="dir-mkfs", run=_check_mkfs)]
