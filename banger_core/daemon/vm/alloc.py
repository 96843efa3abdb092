"""Guest addresses: a free IP in the bridge subnet for tap NICs, a unique locally administered MAC."""

from __future__ import annotations

import ipaddress
import secrets

from banger_core.common.errors import Conflict


def template_ip(cidr: ipaddress.IPv4Network, bridge_ip: ipaddress.IPv4Address) -> str | None:
    """The address a warm-start template VM boots with on a bridge: the last host address of ``cidr``
    that is not the bridge's. No VM is ever given it (:func:`allocate_ip`), so a template can boot
    while VMs run; its restored copies each get their own address through the guest agent."""
    last = cidr.broadcast_address if cidr.prefixlen >= 31 else cidr.broadcast_address - 1
    for host in (last, last - 1):
        if host != bridge_ip and host in cidr and (cidr.prefixlen >= 31 or host != cidr.network_address):
            return str(host)
    return None


def allocate_ip(cidr: ipaddress.IPv4Network, bridge_ip: ipaddress.IPv4Address, used: set[str]) -> str:
    """The first address of ``cidr`` that is neither the bridge's, nor the templates' (:func:`template_ip`),
    nor in ``used``."""
    reserved = template_ip(cidr, bridge_ip)
    for host in cidr.hosts():
        text = str(host)
        if text not in used and host != bridge_ip and text != reserved:
            return text
    raise Conflict(f"no free guest address left in {cidr}: delete VMs or widen cidr")


def new_mac(used: set[str]) -> str:
    """A random MAC in QEMU's 52:54:00 prefix that no VM has yet."""
    for _ in range(1000):
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in used:
            return mac
    raise Conflict("could not allocate a unique MAC address")
