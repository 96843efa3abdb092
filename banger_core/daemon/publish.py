"""Publishing the store's images and kernels (``banger image push``, ``banger kernel push``).

The daemon owns the store, so it writes the bundle (:func:`banger_core.common.bundles.write_bundle`,
every payload file checked against the digest its manifest records) into a private directory
under the cache dir and hands it to the artifact publisher whose driver claims the target
(``oci`` for ``REGISTRY/REPO:TAG``). The bundle is deleted afterwards, whatever happened.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from banger_core.api.models import Pushed
from banger_core.common.bundles import write_bundle
from banger_core.common.errors import BangerError, InvalidRequest, Unavailable
from banger_core.daemon.documents import claiming_publisher
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_hookspecs import ArtifactPublisherDriver, Progress, SourceUnavailable

log = logging.getLogger("banger.publish")


class Publisher:
    """Pushes images and kernels of the store through the artifact publisher plugins."""

    def __init__(self, rt: Runtime, store: Store) -> None:
        self.rt = rt
        self.store = store

    def push(self, kind: Literal["image", "kernel"], name: str, target: str, progress: Progress) -> Pushed:
        """Publish image or kernel ``name`` of the store at ``target``; the answer pins it by digest."""
        if kind == "image":
            self.store.get_image(name)  # NotFound in one line: "image 'x' is not pulled: run ..."
            directory = self.rt.layout.image_dir(name)
        else:
            self.store.get_kernel(name)
            directory = self.rt.layout.kernel_dir(name)
        publisher_name, publisher = self._claiming(target, kind)
        parent = Path(self.rt.ctx.cache_dir) / "publish"
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=parent))
        try:
            info = write_bundle(kind, directory, scratch / f"{name}.tar.zst", progress)
            progress.step(f"pushing {kind} {name} to {target} ({info.size} bytes)")
            try:
                published = publisher.publish(info.path, info.manifest, target, progress)
            except BangerError:
                raise
            except SourceUnavailable as exc:
                raise Unavailable(f"cannot push {kind} {name} to {target}: {exc}") from None
            except Exception as exc:
                if type(exc).__module__ == "builtins":  # a plugin bug: keep the type, it is all there is
                    log.exception("artifact publisher %s failed to push %s %s", publisher_name, kind, name)
                    raise BangerError(
                        f"artifact publisher {publisher_name} failed to push {kind} {name}: {type(exc).__name__}: {exc}"
                    ) from exc
                raise BangerError(f"cannot push {kind} {name} to {target}: {exc}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return Pushed(
            kind=kind,
            name=name,
            target=target,
            publisher=publisher_name,
            reference=published.reference,
            digest=published.digest,
            bundle_sha256=info.sha256,
            bundle_size=info.size,
            uploaded=published.uploaded,
        )

    def _claiming(self, target: str, kind: str) -> tuple[str, ArtifactPublisherDriver]:
        claimed = claiming_publisher(self.rt, target)
        if claimed is None:
            known = ", ".join(sorted(self.rt.pm.artifact_publishers())) or "none installed"
            raise InvalidRequest(
                f"no artifact publisher understands {target!r} (asked: {known}): "
                f"push to a registry reference such as ghcr.io/team/{kind}:v1"
            )
        return claimed
