"""banger's authoritative DNS server for the ``vm.`` zone (dnslib on asyncio, UDP).

``<name>.vm`` answers with the VM's IPv4 address, asked of a lookup callback
on every query, so a VM that starts or stops is visible at once (TTL 5 s).
The server never recurses: it answers only for ``vm.`` and refuses everything
else, so it cannot be used as an open resolver or amplifier.

=====================================  ==========================================
query                                  answer
=====================================  ==========================================
``A web.vm`` (lookup gives an address)  NOERROR, ``web.vm. 5 IN A <address>``
``AAAA web.vm`` (or any other type)     NOERROR, no answer, the zone's SOA
``A gone.vm`` (lookup gives None)       NXDOMAIN, the zone's SOA
``A example.com``                       REFUSED
malformed packet                        dropped, logged (rate-limited)
=====================================  ==========================================

The daemon runs it in its own event loop::

    server = DnsServer(lambda name: vms.ip_of(name))
    await server.start(binds=[("127.0.0.1", config["dns_loopback_port"])])
    # the bridge's address: a socket bound by the host ops (port 53 needs privilege)
    await server.start(sockets=[host_ops.bind_dns_socket(bridge_ip, config["dns_port"])])
    ...
    await server.stop()

Tests and benchmarks run it in a thread with
:class:`banger_core.testing.dns.DnsServerThread`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import cast

from dnslib import CLASS, EDNS0, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord

from banger_core.common.errors import DnsServerError
from banger_hookspecs.names import is_vm_name

#: ``name -> IPv4 address or None``; called in the event loop on every query, so it must not block.
Lookup = Callable[[str], str | None]

ZONE = "vm"
TTL = 5
EDNS_UDP_SIZE = 1232  # the DNS flag day 2020 size: never fragments
_OPCODE_QUERY = 0
_CLASS_ANY = 255  # dnslib spells it '*'

log = logging.getLogger("banger.dns")


class RateLimitedLog:
    """Logs a warning at most once per ``interval`` seconds, counting what it swallowed.

    A flood of junk packets must not flood the daemon log.
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.suppressed = 0
        self._last: float | None = None

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args`` unless a line was logged less than ``interval`` seconds ago."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return
        if self.suppressed:
            message += f" ({self.suppressed} similar messages suppressed)"
        self.logger.warning(message, *args)
        self.suppressed = 0
        self._last = now


class VmZone:
    """Turns one query packet into one answer packet for the ``vm.`` zone (no I/O).

    Args:
        lookup: ``name -> IPv4 address | None`` for the bare, lowercase VM name (``"web"``).
        zone: the zone's single label.
        ttl: TTL of answers and of the SOA (which also bounds negative caching).
        logger: where rate-limited warnings go.

    Example:
        >>> zone = VmZone({"web": "172.16.0.7"}.get)
        >>> reply = DNSRecord.parse(zone.answer(DNSRecord.question("web.vm").pack()))
        >>> str(reply.rr[0].rdata), reply.rr[0].ttl
        ('172.16.0.7', 5)
    """

    def __init__(
        self, lookup: Lookup, *, zone: str = ZONE, ttl: int = TTL, logger: logging.Logger | None = None
    ) -> None:
        self.lookup = lookup
        self.zone = zone.encode()
        self.ttl = ttl
        self.warn = RateLimitedLog(logger or log)
        self.soa = RR(
            f"{zone}.",
            QTYPE.SOA,
            ttl=ttl,
            rdata=SOA(f"ns.{zone}.", f"hostmaster.{zone}.", (1, 3600, 600, 86400, ttl)),
        )

    def answer(self, packet: bytes, peer: object = None) -> bytes | None:
        """The response to ``packet``, or None when it deserves none (malformed, or itself a response).

        Args:
            packet: a DNS message as received.
            peer: the sender, only for log lines.
        """
        try:
            query = DNSRecord.parse(packet)
        except Exception as exc:  # hostile input may break dnslib in any way: drop it, keep serving
            self.warn.warning("dropped a malformed DNS packet from %s: %s", peer, exc)
            return None
        if query.header.qr:
            self.warn.warning("dropped a DNS response sent to the server by %s", peer)
            return None
        reply = DNSRecord(
            DNSHeader(id=query.header.id, qr=1, opcode=query.header.opcode, rd=query.header.rd, ra=0),
            questions=query.questions[:1],
        )
        edns = next((rr for rr in query.ar if rr.rtype == QTYPE.OPT), None)
        if edns is not None:
            # EDNS version 0 only: anything newer gets BADVERS (extended rcode 1).
            version = (edns.ttl >> 16) & 0xFF
            reply.add_ar(EDNS0(udp_len=EDNS_UDP_SIZE, ext_rcode=1 if version else 0))
            if version:
                return bytes(reply.pack())
        if query.header.opcode != _OPCODE_QUERY:
            reply.header.rcode = RCODE.NOTIMP
        elif len(query.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
        else:
            self._resolve(query.questions[0], reply, peer)
        return bytes(reply.pack())

    def _resolve(self, question: DNSQuestion, reply: DNSRecord, peer: object) -> None:
        labels = tuple(label.lower() for label in question.qname.label)
        if question.qclass not in (CLASS.IN, _CLASS_ANY) or not labels or labels[-1] != self.zone:
            reply.header.rcode = RCODE.REFUSED  # not ours, and we never recurse
            return
        reply.header.aa = 1
        if len(labels) == 1:  # the apex: only its SOA exists
            if question.qtype in (QTYPE.SOA, QTYPE.ANY):
                reply.add_answer(self.soa)
            else:
                reply.add_auth(self.soa)
            return
        address = self._address_of(labels[:-1], peer)
        if address is _FAILED:
            reply.header.aa = 0
            reply.header.rcode = RCODE.SERVFAIL
        elif address is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self.soa)
        elif question.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(question.qname, QTYPE.A, ttl=self.ttl, rdata=A(address)))
        else:
            reply.add_auth(self.soa)  # the name exists: empty NOERROR, not NXDOMAIN

    def _address_of(self, labels: tuple[bytes, ...], peer: object) -> str | object | None:
        if len(labels) != 1:
            return None  # VM names are single labels: deeper names cannot exist
        try:
            name = labels[0].decode("ascii")
        except UnicodeDecodeError:
            return None
        if not is_vm_name(name):
            return None
        try:
            found = self.lookup(name)
            return None if found is None else str(ipaddress.IPv4Address(found))
        except Exception as exc:
            self.warn.warning("DNS lookup of %s.%s for %s failed: %r", name, self.zone.decode(), peer, exc)
            return _FAILED


_FAILED = object()


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone: VmZone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[object, int]) -> None:
        try:
            reply = self.zone.answer(data, addr)
        except Exception as exc:  # a bug or a dnslib corner: drop this packet, keep serving
            self.zone.warn.warning("could not answer a DNS packet from %s: %r", addr, exc)
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from clients that went away: not the server's problem.
        self.zone.warn.warning("DNS socket error: %s", exc)


def _bind_hint(code: int | None, port: int) -> str:
    if code == errno.EADDRINUSE:
        return "another DNS server (dnsmasq, systemd-resolved, libvirt) holds it: stop it or change dns_port"
    if code == errno.EACCES:
        return f"port {port} needs root or CAP_NET_BIND_SERVICE: run the daemon as root or change dns_port"
    if code == errno.EADDRNOTAVAIL:
        return "the address is not on this host: give an address of one of its interfaces"
    return "check the address and port"


def _validate_bind(address: str, port: int) -> tuple[str, int]:
    try:
        ip = ipaddress.IPv4Address(address)
    except (ValueError, TypeError):
        raise ValueError(f"DNS bind address {address!r} is not an IPv4 address") from None
    if ip.is_unspecified:
        raise ValueError("DNS bind address 0.0.0.0 would serve every network: give the bridge or loopback address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"DNS port {port!r} is not between 0 and 65535")
    return str(ip), port


class DnsServer:
    """The ``.vm`` zone served over UDP by asyncio, on given addresses only.

    Args:
        lookup: ``name -> IPv4 address | None``, called per query in the event loop.
        logger: where rate-limited warnings go.
    """

    def __init__(self, lookup: Lookup, *, logger: logging.Logger | None = None) -> None:
        self.zone = VmZone(lookup, logger=logger)
        self._transports: list[asyncio.DatagramTransport] = []

    async def start(
        self, binds: Sequence[tuple[str, int]] = (), sockets: Sequence[socket.socket] = ()
    ) -> list[tuple[str, int]]:
        """Listen on every ``(address, port)`` in ``binds`` and on every already bound UDP socket in ``sockets``.

        Passing sockets lets a privileged helper bind port 53 (or a test bind
        inside a network namespace) and hand the socket over; the server owns
        and closes them from then on. All or nothing: if one bind fails, the
        others are closed again.

        Returns:
            The ``(address, port)`` pairs listened on (port 0 resolved).

        Raises:
            ValueError: a bind address is not a specific IPv4 address, or a port is out of range.
            DnsServerError: an address could not be bound (the message says why).
        """
        checked = [_validate_bind(address, port) for address, port in binds]
        if not checked and not sockets:
            raise ValueError("give the DNS server at least one address to listen on")
        loop = asyncio.get_running_loop()
        opened: list[asyncio.DatagramTransport] = []
        try:
            for address, port in checked:
                try:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _DnsProtocol(self.zone), local_addr=(address, port), family=socket.AF_INET
                    )
                except OSError as exc:
                    raise DnsServerError(
                        f"cannot listen for DNS on {address}:{port}: {exc.strerror}: {_bind_hint(exc.errno, port)}"
                    ) from exc
                opened.append(transport)
            for sock in sockets:
                transport, _ = await loop.create_datagram_endpoint(lambda: _DnsProtocol(self.zone), sock=sock)
                opened.append(transport)
        except BaseException:
            for transport in opened:
                transport.close()
            raise
        self._transports.extend(opened)
        return self.addresses

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the server listens now."""
        return [(t.get_extra_info("sockname")[0], t.get_extra_info("sockname")[1]) for t in self._transports]

    async def stop(self) -> None:
        """Close every socket; safe to call twice."""
        transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()
        await asyncio.sleep(0)  # let the loop run the close callbacks
