"""Routes ``*.vm`` to banger's DNS server through systemd-resolved.

On the bridge link: banger's server as the link's DNS server, ``~vm`` as a
routing-only domain (resolved sends only ``*.vm`` queries there), and
``default-route false`` so the link never becomes a catch-all resolver;
DNSSEC and DNS-over-TLS off for this link only. Changing a link's DNS needs
root (polkit refuses other users on stock hosts), so the router asks the
daemon's host ops (``HostOps.route_dns``): in-process for a root daemon,
``bangerd-root`` for an owner daemon. The root side validates every argument
and runs ``resolvectl`` with argv lists. ``resolvectl revert`` undoes it all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from banger_hookspecs import HostOps

RESOLVED_RUNTIME = Path("/run/systemd/resolve")


def resolved_running(runtime: Path = RESOLVED_RUNTIME) -> bool:
    """systemd-resolved is active when its runtime dir holds its stub resolv.conf or its varlink socket."""
    return (runtime / "stub-resolv.conf").exists() or (runtime / "io.systemd.Resolve").exists()


class ResolvedRouter:
    """:class:`~banger_hookspecs.DnsRouterDriver` for hosts where systemd-resolved runs.

    Args:
        host_ops: the daemon's privileged host operations (``ctx.host_ops``).
        runtime: systemd-resolved's runtime directory (for :meth:`detect`).

    Example::

        router = ResolvedRouter(ctx.host_ops)
        if router.detect():
            router.route("banger0", "172.16.0.1", "vm")   # *.vm -> 172.16.0.1 on banger0
    """

    def __init__(self, host_ops: HostOps, runtime: Path = RESOLVED_RUNTIME) -> None:
        self.host_ops = host_ops
        self.runtime = runtime

    def detect(self) -> bool:
        """True when systemd-resolved runs and ``resolvectl`` is installed."""
        return resolved_running(self.runtime) and shutil.which("resolvectl") is not None

    def route(self, link: str, server: str, domain: str) -> None:
        """Send ``*.domain`` queries to ``server`` on ``link``, and only those.

        Raises:
            ValueError: the root side refused an argument (nothing ran).
            BangerError: no privilege to route (one line saying how to get it), or resolvectl failed.
        """
        self.host_ops.route_dns(link, server, domain)

    def instructions(self, link: str, server: str, domain: str) -> str:
        """What :meth:`route` does, as commands a user could type."""
        return (
            f"systemd-resolved sends *.{domain} queries to {server} on {link}: "
            f"resolvectl dns {link} {server}; resolvectl domain {link} ~{domain}; "
            f"resolvectl default-route {link} false; resolvectl dnssec {link} no; "
            f"resolvectl dnsovertls {link} no (undo: resolvectl revert {link})"
        )
