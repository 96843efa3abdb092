"""Builds the :class:`~banger_hookspecs.PluginContext` handed to provider factories.

The CLI's context gets :class:`UnprivilegedHostOps`: privileged work (bridge,
taps, NAT) happens only in the daemon, which picks its host ops with
:func:`banger_core.host.hostops.host_ops_for_current_user`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from banger_core.common import hostfacts
from banger_core.common.config import Config
from banger_core.common.errors import NoRootHelper, NotPrivileged
from banger_hookspecs import HostOps, PluginContext, SignatureRefused, SignatureVerifier


class UnprivilegedHostOps:
    """Host ops for a daemon without CAP_NET_ADMIN: every call explains how to get it."""

    def _refuse(self, what: str) -> NoReturn:
        raise NotPrivileged(
            f"{what} needs root: run the daemon as root, start the root helper (`sudo banger system install "
            '--owner $USER`), or use network_backend = "usernet"'
        )

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

    def spawn_jailed_vmm(
        self, jailer: str, firecracker: str, vm_id: str, uid: int, gid: int, chroot_base: str, console_fifo: str
    ) -> int:
        raise NoRootHelper(
            "the Firecracker jailer needs root: install the services (`banger system install`) so bangerd-root "
            "starts it, run the daemon as root, or set use_jailer = false"
        )

    def bind_dns_socket(self, address: str, port: int) -> socket.socket:
        self._refuse(f"listening for DNS on {address}:{port}")

    def route_dns(self, link: str, server: str, domain: str) -> None:
        self._refuse(f"routing *.{domain} to {server} on {link}")


def resolved_dirs(config: Config) -> tuple[Path, Path, Path]:
    """``(state_dir, cache_dir, runtime_dir)``; config fills in the XDG defaults."""
    return Path(config["state_dir"]), Path(config["cache_dir"]), Path(config["runtime_dir"])


def signature_verifier(config: Config) -> SignatureVerifier:
    """Plugins' ``ctx.verify_signature``: :func:`banger_core.trust.verify_file` under the configured trust root."""

    def verify_signature(
        path: Path, signature: bytes, *, identity: str, issuer: str, subject: str | None = None
    ) -> None:
        # Imported here: sigstore is heavy and the CLI's start-up path never checks a signature.
        from banger_core import trust

        policy = trust.SigningPolicy(identity, issuer, trust.policy_root_from_config(config))
        try:
            trust.verify_file(path, signature, policy, subject=subject)
        except trust.SignatureRefused as exc:
            raise SignatureRefused(str(exc)) from None

    return verify_signature


def make_context(
    config: Config,
    host_ops: HostOps,
    *,
    env: Mapping[str, str] = os.environ,
    logger: logging.Logger | None = None,
) -> PluginContext:
    state, cache, runtime = resolved_dirs(config)
    return PluginContext(
        config=config,
        state_dir=state,
        cache_dir=cache,
        runtime_dir=runtime,
        host_ops=host_ops,
        logger=logger or logging.getLogger("banger"),
        owner_uid=os.geteuid(),
        owner_gid=os.getegid(),
        host=hostfacts.gather(),
        verify_signature=signature_verifier(config),
    )
