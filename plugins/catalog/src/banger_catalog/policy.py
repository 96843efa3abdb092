"""Whether the configured catalog's bundles must be signed (config only: cheap enough for ``banger doctor``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Config key listing the catalogs (``catalog_url`` values) whose bundles may be unsigned.
ALLOW_UNSIGNED_KEY = "catalog_allow_unsigned"


def unsigned_allowed(config: Mapping[str, Any]) -> bool:
    """True when ``catalog_allow_unsigned`` lists the configured ``catalog_url``, exactly as written.

    The embedded catalog is never listed: it ships in the package with the release signer.
    """
    catalog_url = config.get("catalog_url")
    return bool(catalog_url) and catalog_url in (config.get(ALLOW_UNSIGNED_KEY) or [])
