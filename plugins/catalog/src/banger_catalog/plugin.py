"""Entry point of banger-catalog: images and kernels from tar+zstd bundles."""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import ConfigOption, hookimpl


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption("catalog_url", "str", help="URL or file of a catalog.json used instead of the embedded one"),
    ]
