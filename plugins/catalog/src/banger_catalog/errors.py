"""Errors of the catalog plugin (``SourceUnavailable`` comes from the contract, and so does
``BundleError``: every bundle reader raises the same one, see :mod:`banger_hookspecs.bundle_reader`)."""

from __future__ import annotations

from banger_hookspecs.bundle import BundleError

__all__ = ["BundleError", "CatalogError"]


class CatalogError(Exception):
    """A catalog.json is malformed; the message names it and says how to fix it."""
