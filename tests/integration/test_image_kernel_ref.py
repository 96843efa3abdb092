"""`image pull --kernel-ref` through the real daemon, with a source that links its own cached files into the pull.

Like the debootstrap source, this one hard-links ``rootfs.ext4`` and
``manifest.json`` from its cache: the stored image must still be made
read-only, and the kernel override must reach the image's manifest (what
``image export`` bundles) without writing through the link into the cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from banger_core.testing import FakeSite
from tests.support.daemon import DaemonHarness

LINKING_SOURCE = """
import json, os
from pathlib import Path
from banger_hookspecs import ImageArtifact, ImageSource, hookimpl

CACHE = Path(os.environ["BANGER_TEST_LINKING_CACHE"])


class Linking:
    def claims(self, ref):
        return ref == "linked"

    def available(self):
        return []

    def pull(self, ref, dest, progress):
        for name in ("rootfs.ext4", "manifest.json"):
            os.link(CACHE / name, dest / name)
        return ImageArtifact("linked", "1", dest / "rootfs.ext4", "generic-6.1", "00" * 32, 4096, {})


@hookimpl
def banger_image_sources():
    return [ImageSource("linking", "links its cache", lambda ctx: Linking(), priority=5)]
"""


def test_kernel_ref_reaches_the_manifest_and_a_linked_rootfs_is_still_read_only(
    daemon: DaemonHarness, banger_site: FakeSite, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "rootfs.ext4").write_bytes(bytes(4096))
    cached_manifest = {"kind": "image", "name": "linked", "kernel_ref": "generic-6.1", "version": "1"}
    (cache / "manifest.json").write_text(json.dumps(cached_manifest))
    banger_site.add_plugin("linking", "banger-linking-test", source=LINKING_SOURCE)
    daemon.env["BANGER_TEST_LINKING_CACHE"] = str(cache)

    client = daemon.client()
    image = client.images.pull("linked", kernel_ref="fake-kernel")

    assert (image.kernel_ref, image.reference, image.used_source) == ("fake-kernel", "linked", "linking")
    stored = Path(image.path)
    assert os.stat(stored).st_mode & 0o777 == 0o444
    assert json.loads((stored.parent / "manifest.json").read_text())["kernel_ref"] == "fake-kernel"
    assert json.loads((cache / "manifest.json").read_text()) == cached_manifest
    assert client.images.get("linked").kernel_ref == "fake-kernel"
