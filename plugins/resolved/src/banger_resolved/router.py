"""Routes ``*.vm`` to banger's DNS server through systemd-resolved, with ``resolvectl``.

On the bridge link: banger's server as the link's DNS server, ``~vm`` as a
routing-only domain (resolved sends only ``*.vm`` queries there), and
``default-route false`` so the link never becomes a catch-all resolver,
whatever the systemd version's default. DNSSEC and DNS-over-TLS are turned
off for this link only: ``vm.`` is not in the signed root (a validating
resolver would call every answer bogus) and banger's server speaks plain UDP;
per-link settings win over the host's global ones. ``resolvectl revert``
undoes all of it. Every argument is validated before ``resolvectl`` runs;
argv lists only.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

from banger_hookspecs.names import DNS_LABEL

RESOLVED_RUNTIME = Path("/run/systemd/resolve")

_IFNAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,15}$")
_DOMAIN_RE = re.compile(rf"{DNS_LABEL}(?:\.{DNS_LABEL})*")


class ResolvedError(Exception):
    """resolvectl is missing or refused; the message is one line saying what to do."""


def resolved_running(runtime: Path = RESOLVED_RUNTIME) -> bool:
    """systemd-resolved is active when its runtime dir holds its stub resolv.conf or its varlink socket."""
    return (runtime / "stub-resolv.conf").exists() or (runtime / "io.systemd.Resolve").exists()


def _link(link: str) -> str:
    if not isinstance(link, str) or not _IFNAME_RE.match(link):
        raise ValueError(f"invalid link name {link!r}: expected a network interface name like banger0")
    return link


def _server(server: str) -> str:
    """``"172.16.0.1"`` or ``"172.16.0.1:5353"`` (resolvectl's syntax for a port), normalized."""
    address, _, port = server.partition(":") if isinstance(server, str) else ("", "", "")
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(f"invalid DNS server {server!r}: expected an IPv4 address, optionally with :PORT") from None
    if not port:
        return str(ip)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid DNS server {server!r}: the port must be between 1 and 65535")
    return f"{ip}:{int(port)}"


def _domain(domain: str) -> str:
    if not isinstance(domain, str) or len(domain) > 253 or not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"invalid domain {domain!r}: expected lowercase DNS labels like vm")
    return domain


class ResolvedRouter:
    """:class:`~banger_hookspecs.DnsRouterDriver` for hosts where systemd-resolved runs.

    Args:
        runtime: systemd-resolved's runtime directory (for :meth:`detect`).
        timeout: seconds one ``resolvectl`` call may take.

    Example::

        router = ResolvedRouter()
        if router.detect():
            router.route("banger0", "172.16.0.1", "vm")   # *.vm -> 172.16.0.1 on banger0
    """

    def __init__(self, runtime: Path = RESOLVED_RUNTIME, timeout: float = 10.0) -> None:
        self.runtime = runtime
        self.timeout = timeout

    def detect(self) -> bool:
        """True when systemd-resolved runs and ``resolvectl`` is on PATH."""
        return resolved_running(self.runtime) and shutil.which("resolvectl") is not None

    def route(self, link: str, server: str, domain: str) -> None:
        """Send ``*.domain`` queries to ``server`` on ``link``, and only those.

        Raises:
            ValueError: a malformed argument (nothing ran).
            ResolvedError: resolvectl is missing or failed.
        """
        link, server, domain = _link(link), _server(server), _domain(domain)
        self._resolvectl("dns", link, server)
        self._resolvectl("domain", link, f"~{domain}")
        self._resolvectl("default-route", link, "false")
        self._resolvectl("dnssec", link, "no")
        self._resolvectl("dnsovertls", link, "no")

    def instructions(self, link: str, server: str, domain: str) -> str:
        """What :meth:`route` does, as commands a user could type."""
        return (
            f"systemd-resolved sends *.{domain} queries to {server} on {link}: "
            f"resolvectl dns {link} {server}; resolvectl domain {link} ~{domain}; "
            f"resolvectl default-route {link} false; resolvectl dnssec {link} no; "
            f"resolvectl dnsovertls {link} no (undo: resolvectl revert {link})"
        )

    def _resolvectl(self, *args: str) -> None:
        binary = shutil.which("resolvectl")
        command = " ".join(("resolvectl", *args))
        if binary is None:
            raise ResolvedError(f'cannot run `{command}`: resolvectl not found: set dns_router = "manual"')
        try:
            result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ResolvedError(
                f"`{command}` did not finish within {self.timeout:g} s: is systemd-resolved healthy?"
            ) from None
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
            raise ResolvedError(
                f'`{command}` failed: {detail}: check `systemctl status systemd-resolved`, or set dns_router = "manual"'
            )
