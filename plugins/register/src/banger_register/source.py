"""The ``register`` image source driver: ``register:/abs/rootfs.ext4`` becomes an image, the file untouched.

``banger image register --name base --rootfs /abs/x.ext4`` is, in the core, a
pull of ``register:/abs/x.ext4`` through this source alone, under the name the
user gave (a plain ``banger image pull register:/abs/x.ext4`` names the image
after the file). Checks and the link-or-copy are :mod:`banger_register.adopt`.
"""

from __future__ import annotations

import re
from pathlib import Path

from banger_hookspecs import ImageArtifact, ImageListing, PluginContext, Progress
from banger_register.adopt import adopt, open_checked, sha256_of
from banger_register.plugin import DEFAULT_KERNEL_REF

PREFIX = "register:"


def image_name_for(path: str) -> str:
    """``/srv/images/Base.ext4`` -> ``base``: the file's stem in banger's image-name alphabet."""
    stem = Path(path).name.removesuffix(".ext4")
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("._-")[:64]
    return name or "registered"


class RegisterImageSource:
    """Files already on the host (an :class:`~banger_hookspecs.ImageSourceDriver`)."""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx

    def claims(self, ref: str) -> bool:
        """True for ``register:PATH`` references only."""
        return ref.startswith(PREFIX)

    def available(self) -> list[ImageListing]:
        """Nothing to list: any ext4 file on the host can be registered."""
        return []

    def pull(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        """Hard-link (or copy) the checked file to ``dest/rootfs.ext4``; the file itself is never written."""
        path = ref.removeprefix(PREFIX)
        target = dest / "rootfs.ext4"
        progress.step(f"checking {path}")
        with open_checked(path, self._ctx.state_dir) as source:
            how = adopt(source, target, progress)
            progress.step("hashing the root filesystem")
            digest = sha256_of(source.fd, progress)
        kernel_ref = self._ctx.config.get("register_kernel_ref")
        return ImageArtifact(
            name=image_name_for(path),
            version=digest[:12],
            rootfs=target,
            kernel_ref=kernel_ref if isinstance(kernel_ref, str) else DEFAULT_KERNEL_REF,
            sha256=digest,
            size=source.stat.st_size,
            metadata={"origin": path, "adopted_by": how},
        )
