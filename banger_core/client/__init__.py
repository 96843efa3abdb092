"""The SDK: a typed Python client for the daemon's API (what the CLI uses).

``Client`` is imported on first use: the package's stdlib-only modules
(:mod:`~banger_core.client.connection`, :mod:`~banger_core.client.transport`)
serve the CLI's fast paths without loading pydantic and httpx.
"""

from __future__ import annotations

from banger_core.common.errors import DaemonUnavailable

#: ``typing`` costs more to import than this module's work: mypy recognises the flag by its name.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from banger_core.client.sdk import Client

__all__ = ["Client", "DaemonUnavailable"]


def __getattr__(name: str) -> object:
    if name == "Client":
        from banger_core.client.sdk import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
