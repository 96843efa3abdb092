"""Privileged host operations (see :class:`banger_hookspecs.HostOps`).

:func:`host_ops_for_current_user` picks the implementation: netlink and
nftables in-process when the daemon runs as root (:mod:`banger_core.host.netops`),
otherwise :class:`UnprivilegedHostOps`, whose every mutation explains how to
get the privilege.
"""

from __future__ import annotations

import os
from typing import NoReturn

from banger_core.common.config import Config
from banger_core.common.errors import NotPrivileged
from banger_hookspecs import HostOps


class UnprivilegedHostOps:
    """Host ops for a daemon without CAP_NET_ADMIN: every call explains how to get it."""

    def _refuse(self, what: str) -> NoReturn:
        raise NotPrivileged(f'{what} needs root: run the daemon as root, or use network_backend = "usernet"')

    def ensure_bridge(self, name: str, address: str) -> bool:
        self._refuse(f"creating bridge {name}")

    def delete_bridge(self, name: str) -> None:
        self._refuse(f"deleting bridge {name}")

    def create_tap(self, name: str, bridge: str, owner_uid: int) -> None:
        self._refuse(f"creating tap {name}")

    def rename_tap(self, name: str, new_name: str) -> None:
        self._refuse(f"renaming tap {name}")

    def delete_tap(self, name: str) -> None:
        self._refuse(f"deleting tap {name}")

    def list_links(self, prefix: str) -> list[str]:
        return []

    def ensure_nat(self, cidr: str, bridge: str) -> None:
        self._refuse("setting up NAT")

    def remove_nat(self, cidr: str, bridge: str) -> None:
        self._refuse("removing NAT")

    def host_routes(self) -> list[str]:
        return []


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
        # Imported here: pyroute2 is heavy and the CLI never needs it.
        from banger_core.host.netops import NetlinkHostOps

        return NetlinkHostOps(config)
    return UnprivilegedHostOps()
