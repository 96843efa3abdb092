"""Sizes as people read them, with nothing imported: ``banger vm list`` shows them on its fast path."""

from __future__ import annotations


def format_size(size: int) -> str:
    """Bytes → the shortest exact ``8G``/``512M`` form (or bytes)."""
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f}G"
    return str(size)


def format_mib(mib: int) -> str:
    """MiB → ``2G`` when whole GiB, else ``3013M`` (how VM memory is shown)."""
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"
