"""Fixtures for banger-debian's tests: the real Debian kernel package, cached across runs."""

from __future__ import annotations

import lzma
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import lz4.block
import pytest

from banger_debian.apt import kernel_dependency, parse_show
from banger_debian.moddep import module_name
from banger_debian.vmlinux import LZ4_LEGACY_BLOCK, LZ4_LEGACY_MAGIC

METAPACKAGE = "linux-image-cloud-amd64"


def _test_cache() -> Path:
    path = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def kernel_deb() -> Path:
    """The real kernel package behind linux-image-cloud-amd64, downloaded once into $BANGER_TEST_CACHE/debs."""
    if not shutil.which("apt-get"):
        pytest.skip("apt-get is missing: the kernel package tests need a Debian host")
    show = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", METAPACKAGE], capture_output=True, text=True, check=False
    )
    meta = parse_show(show.stdout)
    if meta is None:
        pytest.skip(f"apt does not know {METAPACKAGE}: run apt-get update")
    package, version = kernel_dependency(meta)
    debs = _test_cache() / "debs"
    debs.mkdir(exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    scratch = debs / f".download-{os.getpid()}"
    scratch.mkdir(mode=0o755, exist_ok=True)
    try:
        subprocess.run(
            ["apt-get", "download", f"{package}={version}" if version else package],
            cwd=scratch,
            check=True,
            capture_output=True,
        )
        (deb,) = scratch.glob("*.deb")
        target = debs / deb.name
        os.replace(deb, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def kernel_tree(kernel_deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kernel package unpacked (dpkg-deb -x) with modules.dep generated (depmod -b)."""
    tree = tmp_path_factory.mktemp("kernel-tree")
    subprocess.run(["dpkg-deb", "-x", str(kernel_deb), str(tree)], check=True)
    (release,) = [p.name.removeprefix("vmlinuz-") for p in (tree / "boot").glob("vmlinuz-*")]
    subprocess.run(["/usr/sbin/depmod", "-b", str(tree), release], check=True)
    return tree


# --------------------------------------------------------------------------
# Synthetic kernels and module trees, shared by the test modules through the
# ``synth`` fixture (test modules are not importable from each other).
# --------------------------------------------------------------------------


def make_elf(pvh: bool = True, padding: int = 0, noise: int = 0) -> bytes:
    """A minimal 64-bit ELF with one PT_NOTE program header holding a Xen note (type 18 = PVH entry)."""
    note_type = 18 if pvh else 17
    note = struct.pack("<III", 4, 4, note_type) + b"Xen\0" + struct.pack("<I", 0x1000000)
    phoff, phentsize = 64, 56
    note_offset = phoff + phentsize
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, 0, 0, 64, phentsize, 1, 0, 0, 0)
    program = struct.pack("<IIQQQQQQ", 4, 4, note_offset, 0, 0, len(note), len(note), 4)
    return header + program + note + bytes(padding) + random.Random(7).randbytes(noise)


def make_bzimage(payload: bytes, *, prefix: bytes = b"\x90" * 1000, suffix: bytes = b"\xcc" * 500) -> bytes:
    """Wrap ``payload`` like the kernel build does: LZ4 legacy blocks, then the size, then more code."""
    stream = bytearray(LZ4_LEGACY_MAGIC)
    for start in range(0, len(payload), LZ4_LEGACY_BLOCK):
        block = lz4.block.compress(payload[start : start + LZ4_LEGACY_BLOCK], store_size=False)
        stream += struct.pack("<I", len(block)) + block
    stream += struct.pack("<I", len(payload))
    return prefix + bytes(stream) + suffix


DEP = """\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/overlayfs/overlay.ko.xz:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
"""


def fake_module_tree(root: Path, modules_dep: str = DEP) -> Path:
    """A /lib/modules/<release> dir whose .ko files hold their own names."""
    module_dir = root / "lib/modules/6.1.0-test"
    for line in modules_dep.splitlines():
        path = line.split(":", 1)[0]
        target = module_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = f"module {module_name(path)}".encode()
        target.write_bytes(lzma.compress(payload) if path.endswith(".xz") else payload)
    (module_dir / "modules.dep").write_text(modules_dep)
    return module_dir


@pytest.fixture
def synth() -> SimpleNamespace:
    """Helpers that make synthetic ELF kernels, bzImages and module trees."""
    return SimpleNamespace(make_elf=make_elf, make_bzimage=make_bzimage, DEP=DEP, fake_module_tree=fake_module_tree)
