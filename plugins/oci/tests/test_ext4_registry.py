"""Through a real registry: layers pushed with skopeo, pulled by the oci source, flattened into ext4 and read back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress, make_plugin_context
from banger_oci.source import OciImageSource
from plugins.oci.tests.ocifs_kit import GZIP, read_ext4, write_oci_layout
from plugins.oci.tests.registry_lab import Layout, Registry
from plugins.oci.tests.test_bootable import expected_bootable, with_ssh_config
from plugins.oci.tests.test_ext4 import comparable

E2FSCK = "/usr/sbin/e2fsck"


@pytest.mark.integration
@pytest.mark.parametrize("v2s2", [False, True], ids=["oci", "docker-v2s2"])
def test_pulled_image_reads_back_exactly(v2s2: bool, banger_env: dict[str, str], tmp_path: Path) -> None:
    """Multi-layer whiteouts, hard links across layers, setuid, uid 1000/gid 42, devices, xattrs, odd names."""
    layers = with_ssh_config(tmp_path / "blobs", upper_media_type=GZIP)  # skopeo's v2s2 takes no zstd
    write_oci_layout(tmp_path / "layout", layers, tag="v1")
    registry = Registry(tmp_path / "registry")
    try:
        ref = registry.push(Layout(tmp_path / "layout", "v1"), "team/spec", v2s2=v2s2)
        dest = tmp_path / "dest"
        dest.mkdir()
        artifact = OciImageSource(make_plugin_context(banger_env)).pull(ref, dest, RecordingProgress())
    finally:
        registry.stop()
    subprocess.run([E2FSCK, "-fn", str(artifact.rootfs)], check=True, capture_output=True)
    assert comparable(read_ext4(artifact.rootfs, tmp_path / "read")) == expected_bootable()
