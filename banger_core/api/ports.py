"""Published ports: ``-p HOST:GUEST``, ``-p GUEST`` (a free host port is picked), ``/udp`` allowed.

A published port always listens on the host's ``127.0.0.1``: with usernet as
a forward of the VMM's user NIC, on a bridge as a forwarder to the guest's
address (see docs/ports.md). Parsing lives here, with the API models, so the
CLI and the SDK refuse a bad spec before any request is sent.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

#: Where every published port listens on the host.
PUBLISH_ADDRESS: Final = "127.0.0.1"

_SPEC = re.compile(r"(?:(?P<host>\d{1,5}):)?(?P<guest>\d{1,5})(?:/(?P<proto>[A-Za-z]+))?")


class PortMapping(BaseModel):
    """One published port. ``host_port`` None (only in a request or plan): picked when the VM is created."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    guest_port: int
    #: Defaults to None: the SDK leaves None fields out of a request body.
    host_port: int | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    host_address: Literal["127.0.0.1"] = PUBLISH_ADDRESS

    def __str__(self) -> str:
        """``docker port`` style: ``80/tcp -> 127.0.0.1:8080``."""
        host = self.host_port if self.host_port is not None else "(auto)"
        return f"{self.guest_port}/{self.protocol} -> {self.host_address}:{host}"


def _port(text: str, what: str, spec: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{what} port {port} in {spec!r} is out of range: ports are 1-65535")
    return port


def parse_publish(spec: str) -> PortMapping:
    """``HOST:GUEST[/tcp|/udp]`` or ``GUEST[/tcp|/udp]`` as a mapping, or ValueError saying how to write it."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise ValueError(
            f"bad port {spec!r}: write HOST:GUEST (8080:80), GUEST (80, a free host port is picked), "
            "optionally with /tcp or /udp (5353:53/udp)"
        )
    protocol = (match["proto"] or "tcp").lower()
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"bad port {spec!r}: protocol {match['proto']!r} is neither tcp nor udp")
    host = _port(match["host"], "host", spec) if match["host"] else None
    return PortMapping(
        host_port=host, guest_port=_port(match["guest"], "guest", spec), protocol="udp" if protocol == "udp" else "tcp"
    )


def _mapping(item: object) -> PortMapping:
    if isinstance(item, PortMapping):
        return item
    if isinstance(item, str):
        return parse_publish(item)
    if isinstance(item, dict):
        return PortMapping.model_validate(item)
    raise ValueError(f'each port is a string like "8080:80" or an object, got {item!r}')


def requested_ports(value: object) -> object:
    """A create's ``ports``: each a spec string (``"8080:80/udp"``) or a mapping object, as a tuple.

    Duplicate host ports (same protocol) are refused here, before the daemon
    is asked anything.
    """
    if not isinstance(value, list | tuple):
        return value  # strict validation names the wrong type
    ports = tuple(_mapping(item) for item in value)
    seen: set[tuple[int, str]] = set()
    for port in ports:
        if port.host_port is not None:
            key = (port.host_port, port.protocol)
            if key in seen:
                raise ValueError(f"host port {port.host_port}/{port.protocol} is published twice: publish it once")
            seen.add(key)
    return ports
