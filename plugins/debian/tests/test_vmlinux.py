"""ELF vmlinux extraction from LZ4 bzImages: the real Debian kernel and hand-made bad inputs."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from banger_debian.vmlinux import (
    LZ4_LEGACY_BLOCK,
    LZ4_LEGACY_MAGIC,
    VmlinuxError,
    extract_vmlinux,
    extract_vmlinux_file,
    has_pvh_note,
)

pytestmark = pytest.mark.unit


def test_extracts_a_multi_block_payload(synth: SimpleNamespace) -> None:
    elf = synth.make_elf(padding=(LZ4_LEGACY_BLOCK * 2) + 12345)  # three blocks, the last one short
    assert extract_vmlinux(synth.make_bzimage(elf)) == elf


def test_a_chance_magic_before_the_payload_is_skipped(synth: SimpleNamespace) -> None:
    elf = synth.make_elf(padding=4096)
    decoy = LZ4_LEGACY_MAGIC + struct.pack("<I", 7) + b"garbage"
    assert extract_vmlinux(synth.make_bzimage(elf, prefix=b"\x90" * 64 + decoy + b"\x90" * 64)) == elf


def test_no_lz4_magic_is_a_clear_error() -> None:
    with pytest.raises(VmlinuxError, match=r"no LZ4 payload .* only LZ4-compressed bzImages"):
        extract_vmlinux(b"MZ" + b"\0" * 4096)


def test_truncated_payload_is_reported_as_truncated(synth: SimpleNamespace) -> None:
    image = synth.make_bzimage(synth.make_elf(noise=100_000), suffix=b"")
    with pytest.raises(VmlinuxError, match="truncated"):
        extract_vmlinux(image[: len(image) // 2])


def test_truncated_at_a_block_boundary_is_reported_as_truncated(synth: SimpleNamespace) -> None:
    elf = synth.make_elf(padding=LZ4_LEGACY_BLOCK + 10)
    full = synth.make_bzimage(elf, prefix=b"", suffix=b"")
    (first_block_size,) = struct.unpack_from("<I", full, 4)
    with pytest.raises(VmlinuxError, match="truncated"):
        extract_vmlinux(full[: 8 + first_block_size])


def test_wrong_declared_size_is_an_error(synth: SimpleNamespace) -> None:
    elf = synth.make_elf(padding=2 << 20)
    image = bytearray(synth.make_bzimage(elf, prefix=b"", suffix=b""))
    struct.pack_into("<I", image, len(image) - 4, len(elf) + 4096)
    with pytest.raises(VmlinuxError, match="declares"):
        extract_vmlinux(bytes(image))


def test_payload_that_is_not_elf_is_refused(synth: SimpleNamespace) -> None:
    with pytest.raises(VmlinuxError, match="does not decompress to an ELF"):
        extract_vmlinux(synth.make_bzimage(b"not an elf" * 1000))


def test_elf_without_pvh_note_is_refused(synth: SimpleNamespace) -> None:
    with pytest.raises(VmlinuxError, match="PVH"):
        extract_vmlinux(synth.make_bzimage(synth.make_elf(pvh=False, padding=1000)))


def test_has_pvh_note_rejects_garbage(synth: SimpleNamespace) -> None:
    assert not has_pvh_note(b"")
    assert not has_pvh_note(b"\x7fELF" + b"\xff" * 60)
    assert has_pvh_note(synth.make_elf())


def test_real_debian_kernel(kernel_tree: Path, tmp_path: Path) -> None:
    (bzimage,) = (kernel_tree / "boot").glob("vmlinuz-*")
    dest = tmp_path / "vmlinux"
    size = extract_vmlinux_file(bzimage, dest)
    data = dest.read_bytes()
    assert size == len(data) > 20 << 20
    assert data[:4] == b"\x7fELF" and has_pvh_note(data)
    # readelf (binutils) agrees it is an x86-64 executable with notes, when it is installed
    readelf = subprocess.run(["readelf", "-h", str(dest)], capture_output=True, text=True, check=False)
    if readelf.returncode == 0:
        assert "X86-64" in readelf.stdout


def test_real_debian_kernel_truncated(kernel_tree: Path) -> None:
    (bzimage,) = (kernel_tree / "boot").glob("vmlinuz-*")
    data = bzimage.read_bytes()
    with pytest.raises(VmlinuxError, match="truncated"):
        extract_vmlinux(data[: len(data) // 2])
