"""A catalog entry for a test bundle (the catalog's drivers and signature tests build the same ones)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def catalog_entry(bundle: Path, kind: str, name: str, **overrides: Any) -> dict[str, Any]:
    data = bundle.read_bytes()
    entry: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "description": f"test {kind}",
        "url": bundle.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    if kind == "image":
        entry["kernel_ref"] = "generic-6.1"
    entry.update(overrides)
    return entry
