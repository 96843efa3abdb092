"""The SDK: a typed Python client for the daemon's API (what the CLI uses)."""

from banger_core.client.sdk import Client, DaemonUnavailable

__all__ = ["Client", "DaemonUnavailable"]
