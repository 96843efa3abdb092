"""Entry point of banger-register: ``register:/abs/rootfs.ext4`` references, for ``banger image register``.

Registration is cheap: the driver module is imported only when the core builds it.
"""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import ConfigOption, ImageSource, ImageSourceDriver, PluginContext, hookimpl

#: ``register:`` references name a file, never a catalog name or a registry reference: no other
#: source claims them, so the priority only orders listings.
PRIORITY = 70
#: The catalog's generic kernel (plugins/catalog's catalog.json), which boots any image banger made bootable.
DEFAULT_KERNEL_REF = "generic-6.1"


def make_image_source(ctx: PluginContext) -> ImageSourceDriver:
    """Build the ``register`` image source driver."""
    from banger_register.source import RegisterImageSource

    return RegisterImageSource(ctx)


@hookimpl
def banger_image_sources() -> Iterable[ImageSource]:
    return [
        ImageSource(
            name="register",
            description="adopt an ext4 file already on the host (banger image register --rootfs /abs/rootfs.ext4)",
            factory=make_image_source,
            priority=PRIORITY,
        )
    ]


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption(
            "register_kernel_ref",
            "str",
            default=DEFAULT_KERNEL_REF,
            help="kernel that registered images boot with when `image register` names none",
        ),
    ]
