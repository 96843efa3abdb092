"""e2e: a Debian image without banger's pieces, pulled from a registry on loopback, boots to ssh under QEMU TCG."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from plugins.oci.tests.ocifs_kit import TAR, write_layer, write_oci_layout
from plugins.oci.tests.registry_lab import Layout, Registry
from tests.support.e2e import E2E

DEBUGFS = "/usr/sbin/debugfs"
#: What banger's golden recipe adds; a plain Debian image with openssh-server has none of it.
BANGER_PIECES = (
    "usr/lib/banger",
    "etc/systemd/system/banger-ready.service",
    "etc/systemd/system/multi-user.target.wants/banger-ready.service",
    "etc/ssh/sshd_config.d/banger.conf",
    "etc/ssh/sshd_config.d/banger-hostkey.conf",
    "etc/machine-id",
)


def plain_debian_layer(golden: Path, work: Path) -> Path:
    """The golden image's tree minus banger's pieces, with a real fstab, as one tar layer."""
    root = work / "root"
    root.mkdir()
    subprocess.run([DEBUGFS, "-R", f"rdump / {root}", str(golden)], check=True, capture_output=True)
    for piece in BANGER_PIECES:
        path = root / piece
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    (root / "etc" / "fstab").write_text("UUID=0000 / ext4 errors=remount-ro 0 1\n")
    shutil.rmtree(root / "lost+found")
    tar_path = work / "layer.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=".")
    shutil.rmtree(root)
    return tar_path


@pytest.mark.e2e
@pytest.mark.builtins  # boots through the qemu, usernet and debootstrap plugins: not in the oci-only tox env
def test_a_pulled_debian_image_boots_to_ssh(e2e: E2E, tmp_path: Path) -> None:
    cache = Path(e2e.env["XDG_CACHE_HOME"]) / "banger" / "plugins" / "debootstrap" / "images"
    golden = max(cache.glob("*/rootfs.ext4"), key=lambda p: p.stat().st_mtime)
    raw = plain_debian_layer(golden, tmp_path)
    layer = write_layer(tmp_path / "blobs", [], TAR, raw=raw.read_bytes())
    raw.unlink()
    write_oci_layout(tmp_path / "layout", [layer], tag="12")
    registry = Registry(tmp_path / "registry")
    try:
        ref = registry.push(Layout(tmp_path / "layout", "12"), "team/debian")
        pulled = e2e.banger("image", "pull", ref, timeout=1800)
        assert pulled.returncode == 0, pulled.stderr
    finally:
        registry.stop()
    run = e2e.banger("vm", "run", "--rm", "--image", "debian-12", "--", "cat", "/etc/os-release", "/etc/fstab")
    assert run.returncode == 0, run.stderr
    assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in run.stdout
    assert "UUID=0000" not in run.stdout  # banger emptied the image's fstab
    assert e2e.vms() == []
