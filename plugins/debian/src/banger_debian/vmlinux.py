"""Extract the ELF ``vmlinux`` from an LZ4-compressed x86 bzImage.

Firecracker (x86_64) boots only ELF kernels with a PVH entry note, while
Debian ships a bzImage. The bzImage embeds the ELF as an LZ4 *legacy* stream
(magic ``02 21 4c 18``): a sequence of blocks, each a little-endian 32-bit
compressed size followed by that many bytes, every block decompressing to at
most 8 MiB. The kernel's build appends the uncompressed size as 32 bits right
after the last block, which doubles as our end-of-stream marker and check.
"""

from __future__ import annotations

import struct
from pathlib import Path

LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
LZ4_LEGACY_BLOCK = 8 << 20
# LZ4_compressBound(8 MiB): no valid legacy block is larger than this.
LZ4_MAX_COMPRESSED_BLOCK = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK // 255 + 16
ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18
# Plausible vmlinux sizes, to tell the appended size field from unrelated bytes.
MIN_VMLINUX = 1 << 20
MAX_VMLINUX = 1 << 30


class VmlinuxError(ValueError):
    """The file is not a bzImage we can turn into a bootable ELF vmlinux."""


def _decompress_legacy(data: bytes, start: int) -> bytes:
    """Decompress the LZ4 legacy stream whose magic is at ``start``."""
    import lz4.block  # the heavy import stays out of plugin loading

    pos = start + len(LZ4_LEGACY_MAGIC)
    chunks: list[bytes] = []
    total = 0
    while True:
        if pos + 4 > len(data):
            if chunks and len(chunks[-1]) == LZ4_LEGACY_BLOCK:
                raise VmlinuxError("the kernel image ends inside its LZ4 payload: the file is truncated")
            break
        (size,) = struct.unpack_from("<I", data, pos)
        if size == 0 or size > LZ4_MAX_COMPRESSED_BLOCK or data[pos : pos + 4] == LZ4_LEGACY_MAGIC:
            break  # not a block: the appended size field or what follows the payload
        if pos + 4 + size > len(data):
            raise VmlinuxError(
                f"LZ4 block at offset {pos} needs {size} bytes but the file ends after {len(data) - pos - 4}: "
                "the kernel image is truncated"
            )
        try:
            chunk = lz4.block.decompress(data[pos + 4 : pos + 4 + size], uncompressed_size=LZ4_LEGACY_BLOCK)
        except lz4.block.LZ4BlockError as exc:
            raise VmlinuxError(f"LZ4 block at offset {pos} is corrupt: {exc}") from None
        chunks.append(chunk)
        total += len(chunk)
        pos += 4 + size
        if len(chunk) < LZ4_LEGACY_BLOCK:
            break  # only the last block is short
    if not chunks:
        raise VmlinuxError(f"LZ4 stream at offset {start} holds no data block")
    if pos + 4 <= len(data):
        (declared,) = struct.unpack_from("<I", data, pos)
        # The build appends the uncompressed size; other bytes may follow instead.
        if MIN_VMLINUX <= declared <= MAX_VMLINUX and declared != total:
            raise VmlinuxError(f"LZ4 stream decompressed to {total} bytes but the kernel declares {declared}")
    return b"".join(chunks)


def has_pvh_note(elf: bytes) -> bool:
    """True if ``elf`` is a 64-bit little-endian ELF with a Xen PVH entry note (what Firecracker needs)."""
    if len(elf) < 64 or elf[:4] != ELF_MAGIC or elf[4] != 2 or elf[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        entry = phoff + index * phentsize
        if entry + 56 > len(elf):
            return False
        p_type, _flags, p_offset = struct.unpack_from("<IIQ", elf, entry)
        (p_filesz,) = struct.unpack_from("<Q", elf, entry + 32)
        if p_type == PT_NOTE and _notes_have_pvh(elf[p_offset : p_offset + p_filesz]):
            return True
    return False


def _notes_have_pvh(notes: bytes) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, note_type = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Return the ELF vmlinux embedded in ``bzimage``.

    Every LZ4 legacy magic in the file is tried in order (the byte pattern can
    also occur by chance in code) until one decompresses to an ELF.

    Args:
        bzimage: contents of a ``vmlinuz`` whose payload is LZ4-compressed.

    Returns:
        The ELF image.

    Raises:
        VmlinuxError: no LZ4 payload, truncated or corrupt payload, or an ELF
            without the PVH entry note.
    """
    start = bzimage.find(LZ4_LEGACY_MAGIC)
    if start < 0:
        raise VmlinuxError(
            "no LZ4 payload in the kernel image (magic 02 21 4c 18 not found): "
            "only LZ4-compressed bzImages are supported"
        )
    first_error: VmlinuxError | None = None
    while start >= 0:
        try:
            elf = _decompress_legacy(bzimage, start)
        except VmlinuxError as exc:
            first_error = first_error or exc
        else:
            if elf[:4] == ELF_MAGIC:
                if not has_pvh_note(elf):
                    raise VmlinuxError("the kernel's ELF has no PVH entry note: it was built without CONFIG_PVH")
                return elf
        start = bzimage.find(LZ4_LEGACY_MAGIC, start + 1)
    raise first_error or VmlinuxError("the LZ4 payload of the kernel image does not decompress to an ELF")


def extract_vmlinux_file(bzimage: Path, dest: Path) -> int:
    """Write the ELF vmlinux of ``bzimage`` to ``dest``; return its size."""
    elf = extract_vmlinux(bzimage.read_bytes())
    dest.write_bytes(elf)
    return len(elf)
