"""Errors of the catalog plugin (``SourceUnavailable`` comes from the contract)."""

from __future__ import annotations


class BundleError(Exception):
    """A downloaded bundle failed verification: wrong digest, truncated, or hostile content.

    Deliberately not :class:`~banger_hookspecs.SourceUnavailable`: the core must
    not silently fall back to another source after a tampered download. The
    message is one user sentence.
    """


class CatalogError(Exception):
    """A catalog.json is malformed; the message names it and says how to fix it."""
