"""Small documents stored as artifacts (a catalog.json in an OCI registry), for plugins.

A plugin may not import another plugin, so the ``catalog`` cannot use ``banger_oci``
to read ``catalog_url = "oci://..."``. The core gives every plugin
:attr:`~banger_hookspecs.PluginContext.fetch_document` instead, which lands here:
the artifact publisher claiming the reference (``oci`` for ``REGISTRY/REPO:TAG``)
fetches the document, and its errors become the contract's two kinds.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from banger_hookspecs import ArtifactPublisherDriver, DocumentRefused, FetchedDocument, SourceUnavailable

if TYPE_CHECKING:
    from banger_core.daemon.runtime import Runtime

log = logging.getLogger("banger.documents")


def claiming_publisher(rt: Runtime, target: str) -> tuple[str, ArtifactPublisherDriver] | None:
    """``(name, driver)`` of the first artifact publisher (by priority, then name) claiming ``target``."""
    publishers = rt.pm.artifact_publishers()
    for name in sorted(publishers, key=lambda n: (publishers[n].value.priority, n)):
        driver = rt.artifact_publisher(name)
        if driver.claims(target):
            return name, driver
    return None


def fetch_document(
    rt: Runtime, reference: str, *, artifact_type: str, media_type: str, max_size: int
) -> FetchedDocument:
    """The ``media_type`` document of the ``artifact_type`` artifact at ``reference`` (see the module docstring).

    Raises:
        SourceUnavailable: no publisher claims ``reference``, or its location cannot be reached.
        DocumentRefused: the publisher refused what it found; the message is one sentence.
    """
    claimed = claiming_publisher(rt, reference)
    if claimed is None:
        known = ", ".join(sorted(rt.pm.artifact_publishers())) or "none installed"
        raise SourceUnavailable(f"no artifact publisher understands {reference!r} (asked: {known})")
    name, publisher = claimed
    try:
        document = publisher.fetch_document(
            reference, artifact_type=artifact_type, media_type=media_type, max_size=max_size
        )
    except (SourceUnavailable, DocumentRefused):
        raise
    except Exception as exc:
        if type(exc).__module__ == "builtins":  # a plugin bug: keep the type, it is all there is
            log.exception("artifact publisher %s failed to fetch %s", name, reference)
            why = f"{type(exc).__name__}: {exc}"
            raise DocumentRefused(f"artifact publisher {name} failed to fetch {reference}: {why}") from exc
        raise DocumentRefused(str(exc)) from None
    if len(document.data) > max_size:  # the bound holds whatever the plugin does
        raise DocumentRefused(f"{document.reference} holds more than {max_size} bytes: refused")
    return document
