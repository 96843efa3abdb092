"""Privileged host operations (see :class:`banger_hookspecs.HostOps`)."""

from __future__ import annotations

from typing import NoReturn

from banger_core.config import Config
from banger_core.errors import BangerError
from banger_hookspecs import HostOps


class NotPrivileged(BangerError):
    pass


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
    """The host ops this process may use."""
    return UnprivilegedHostOps()
