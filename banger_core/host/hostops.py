"""Which privileged host operations (see :class:`banger_hookspecs.HostOps`) the daemon gets.

:func:`host_ops_for_current_user` picks the implementation: netlink and
nftables in-process when the daemon runs as root (:mod:`banger_core.host.netops`);
for a daemon running as its owner, the ``bangerd-root`` helper
(:mod:`banger_core.host.rootclient`) when one is configured or present;
otherwise :class:`~banger_core.common.context.UnprivilegedHostOps`, whose every
mutation explains how to get the privilege.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from banger_core.common.config import Config
from banger_core.common.context import UnprivilegedHostOps
from banger_hookspecs import HostOps

#: Where ``bangerd-root.service`` listens (``bangerd-root --socket`` default).
DEFAULT_ROOT_HELPER_SOCKET = Path("/run/banger-root/bangerd-root.sock")
ROOT_HELPER_ENV = "BANGER_ROOT_HELPER"


def root_helper_socket(env: Mapping[str, str]) -> Path | None:
    """The helper's socket: ``$BANGER_ROOT_HELPER`` when set (listening or not), else the default if it exists."""
    configured = env.get(ROOT_HELPER_ENV)
    if configured:
        return Path(configured)
    return DEFAULT_ROOT_HELPER_SOCKET if DEFAULT_ROOT_HELPER_SOCKET.exists() else None


def host_ops_for_current_user(config: Config, env: Mapping[str, str] = os.environ) -> HostOps:
    """The host ops this process may use.

    Args:
        config: effective configuration (``cidr`` and ``bridge_ip`` bound what
            the in-process privileged implementation accepts).
        env: the daemon's environment (``BANGER_ROOT_HELPER``).

    Returns:
        :class:`~banger_core.host.netops.NetlinkHostOps` when the effective uid is 0,
        :class:`~banger_core.host.rootclient.RootHelperHostOps` when a root helper
        is configured or its default socket exists, else :class:`UnprivilegedHostOps`.
    """
    if os.geteuid() == 0:
        # Imported here: pyroute2 is heavy and a daemon without root never needs it.
        from banger_core.host.netops import NetlinkHostOps

        return NetlinkHostOps(config)
    helper = root_helper_socket(env)
    if helper is not None:
        from banger_core.host.rootclient import RootHelperHostOps

        return RootHelperHostOps(helper)
    return UnprivilegedHostOps()


def describe(ops: HostOps) -> str:
    """Who performs this daemon's privileged host operations, for its log."""
    from banger_core.host.rootclient import RootHelperHostOps

    if isinstance(ops, RootHelperHostOps):
        return f"bangerd-root at {ops.socket_path}"
    if isinstance(ops, UnprivilegedHostOps):
        return "none (not root and no root helper: bridge networking is unavailable)"
    return "this process (root)"
