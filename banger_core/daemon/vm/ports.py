"""Published ports on the daemon's side: checked before a VM exists, host ports picked, handed to the network.

Every check here runs before the VM's record is written, so a port that is
taken, published twice, or privileged leaves nothing behind. A host port is
picked once, at create, and kept with the VM: each boot publishes the same
one, and ``vm port`` answers the same thing while the VM is stopped.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from banger_core.api.ports import PUBLISH_ADDRESS, PortMapping
from banger_core.common.errors import Conflict, NotPrivileged
from banger_hookspecs import PortForward

#: Linux capability number of CAP_NET_BIND_SERVICE (binding ports below ip_unprivileged_port_start).
CAP_NET_BIND_SERVICE = 10
#: How many random free ports to try before giving up on one no other VM has published.
PICK_ATTEMPTS = 32


def _unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def _may_bind_privileged() -> bool:
    """Whether this process holds CAP_NET_BIND_SERVICE (root normally does)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    return os.geteuid() == 0


def _socket_type(protocol: str) -> int:
    return socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM


def _bind_probe(port: int, protocol: str) -> int:
    """Bind ``127.0.0.1:port`` (0: any) for a moment; the port bound. OSError if it is taken."""
    with socket.socket(socket.AF_INET, _socket_type(protocol)) as sock:
        sock.bind((PUBLISH_ADDRESS, port))
        bound: int = sock.getsockname()[1]
        return bound


def check_bindable(requested: Iterable[PortMapping]) -> None:
    """Refuse a fixed host port this daemon cannot bind: privileged without the right, or taken now."""
    start = _unprivileged_port_start()
    for port in requested:
        if port.host_port is None:
            continue
        label = f"{port.host_port}/{port.protocol}"
        if port.host_port < start and not _may_bind_privileged():
            raise NotPrivileged(
                f"host port {label} is privileged (below {start}) and bangerd may not bind it: "
                f"publish a port of {start} or above (e.g. -p {8000 + port.host_port}:{port.guest_port})"
            )
        try:
            _bind_probe(port.host_port, port.protocol)
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            raise Conflict(
                f"host port {label} on {PUBLISH_ADDRESS} {why}: free it or publish another "
                f"(-p OTHER:{port.guest_port}, or -p {port.guest_port} to pick one)"
            ) from None


def published_by_others(rows: Iterable[tuple[str, Sequence[dict[str, Any]]]]) -> dict[tuple[int, str], str]:
    """``(host_port, protocol) -> VM name`` for the ports existing VMs have published (running or not)."""
    return {(int(p["host_port"]), str(p["protocol"])): name for name, ports in rows for p in ports}


def assign(requested: Iterable[PortMapping], taken: dict[tuple[int, str], str]) -> list[PortMapping]:
    """The requested ports with every host port fixed: Conflict if another VM has published one already.

    A port picked for ``-p GUEST`` is free on the host now and published by no other VM.
    """
    assigned: list[PortMapping] = []
    used = dict(taken)
    for port in requested:
        host_port = port.host_port
        if host_port is not None and (host_port, port.protocol) in used:
            raise Conflict(
                f"host port {host_port}/{port.protocol} is already published by VM {used[host_port, port.protocol]}: "
                f"publish another (-p OTHER:{port.guest_port}) or delete that VM"
            )
        if host_port is None:
            host_port = _pick(port.protocol, used)
        used[host_port, port.protocol] = "this VM"
        assigned.append(port.model_copy(update={"host_port": host_port}))
    return assigned


def _pick(protocol: str, used: dict[tuple[int, str], str]) -> int:
    for _ in range(PICK_ATTEMPTS):
        port = _bind_probe(0, protocol)
        if (port, protocol) not in used:
            return port
    raise Conflict(f"found no free {protocol} port on {PUBLISH_ADDRESS} to publish: pass HOST:GUEST explicitly")


def stored(ports: Iterable[PortMapping]) -> list[dict[str, Any]]:
    """Ports as the VM record keeps them (JSON)."""
    return [{"host_port": p.host_port, "guest_port": p.guest_port, "protocol": p.protocol} for p in ports]


def mappings(row: Sequence[dict[str, Any]]) -> list[PortMapping]:
    """A VM record's ports as API models."""
    return [PortMapping.model_validate(p) for p in row]


def forwards(row: Sequence[dict[str, Any]]) -> tuple[PortForward, ...]:
    """A VM record's ports as what a network backend publishes."""
    return tuple(
        PortForward(
            PUBLISH_ADDRESS, int(p["host_port"]), int(p["guest_port"]), "udp" if p["protocol"] == "udp" else "tcp"
        )
        for p in row
    )
