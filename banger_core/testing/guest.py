"""``known_hosts`` lines for guests booted without the daemon (e2e tests, benchmarks).

The daemon pins host keys itself (:meth:`banger_core.common.ssh.SshKeys.pin`);
a test that boots a VM straight from :mod:`banger_core.daemon.guest` pins it with::

    known_hosts.write_text(known_hosts_line([host_pattern("127.0.0.1", port)], identity))
"""

from __future__ import annotations

from collections.abc import Sequence

from banger_core.daemon.guest import GuestIdentity


def host_pattern(host: str, port: int = 22) -> str:
    """known_hosts host pattern for ``host`` on ``port`` (``[127.0.0.1]:2222`` unless port 22)."""
    if not host or any(ch.isspace() or ch in ",[]" for ch in host):
        raise ValueError(f"invalid host name for known_hosts: {host!r}")
    if not 0 < port < 65536:
        raise ValueError(f"invalid ssh port {port}")
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_line(host_patterns: Sequence[str], identity: GuestIdentity) -> str:
    """One ``known_hosts`` line pinning the VM's host key for ``host_patterns``.

    Args:
        host_patterns: e.g. ``["web.vm", host_pattern("127.0.0.1", 2222)]``.
        identity: the VM's identity.

    Returns:
        ``"web.vm,[127.0.0.1]:2222 ssh-ed25519 AAAA...\\n"``.
    """
    if not host_patterns:
        raise ValueError("known_hosts line needs at least one host pattern")
    for pattern in host_patterns:
        if not pattern or any(ch.isspace() or ch == "," for ch in pattern):
            raise ValueError(f"invalid known_hosts host pattern {pattern!r}")
    return f"{','.join(host_patterns)} {identity.host_key_public}\n"
