"""Which privileged host operations (see :class:`banger_hookspecs.HostOps`) the daemon gets.

:func:`host_ops_for_current_user` picks the implementation: netlink and
nftables in-process when the daemon runs as root (:mod:`banger_core.host.netops`),
otherwise :class:`~banger_core.common.context.UnprivilegedHostOps`, whose every
mutation explains how to get the privilege.
"""

from __future__ import annotations

import os

from banger_core.common.config import Config
from banger_core.common.context import UnprivilegedHostOps
from banger_hookspecs import HostOps


def host_ops_for_current_user(config: Config) -> HostOps:
    """The host ops this process may use.

    Args:
        config: effective configuration (``cidr`` and ``bridge_ip`` bound what
            the privileged implementation accepts).

    Returns:
        :class:`~banger_core.host.netops.NetlinkHostOps` when the effective uid is 0,
        else :class:`UnprivilegedHostOps`.
    """
    if os.geteuid() == 0:
        # Imported here: pyroute2 is heavy and a daemon without root never needs it.
        from banger_core.host.netops import NetlinkHostOps

        return NetlinkHostOps(config)
    return UnprivilegedHostOps()
