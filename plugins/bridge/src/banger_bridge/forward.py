"""Published ports of a bridged VM: a small userspace forwarder from the host's 127.0.0.1 to the guest.

Why userspace and not nftables DNAT: traffic from 127.0.0.1 can be DNATed to
the guest only with ``net.ipv4.conf.<bridge>.route_localnet=1``, which lets
packets with loopback addresses onto the bridge (the hole behind
CVE-2020-8558 in kube-proxy). A forwarder binds exactly the published ports
on 127.0.0.1 and opens ordinary connections to the guest: nothing on the host
changes, and the kernel refuses the bind itself when a port is taken.

One process per VM, started by :class:`~banger_bridge.network.BridgeNetwork`
at attach in its own session (it outlives a daemon restart, as the VMM
does) and ended at detach by pid and start time. It binds every port before
it says ``ready`` on stdout, so a port taken meanwhile fails the VM's start
with the kernel's reason instead of a silent gap.

    python -m banger_bridge.forward GUEST_IP tcp:HOST_PORT:GUEST_PORT udp:HOST_PORT:GUEST_PORT ...
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

LISTEN_ADDRESS = "127.0.0.1"
READY = "ready"
#: A UDP client that sent nothing for this long loses its socket towards the guest.
UDP_IDLE_SECONDS = 120.0
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Rule:
    protocol: str
    host_port: int
    guest_port: int

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``tcp:8080:80``; ValueError when malformed."""
        protocol, host, guest = text.split(":")
        if protocol not in ("tcp", "udp"):
            raise ValueError(f"protocol {protocol!r} is neither tcp nor udp")
        rule = cls(protocol, int(host), int(guest))
        if not (0 < rule.host_port < 65536 and 0 < rule.guest_port < 65536):
            raise ValueError(f"port out of range in {text!r}")
        return rule

    def argument(self) -> str:
        return f"{self.protocol}:{self.host_port}:{self.guest_port}"


def bind(rule: Rule) -> socket.socket:
    """The listening (tcp) or receiving (udp) socket of ``rule`` on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if rule.protocol == "tcp" else socket.SOCK_DGRAM)
    try:
        if rule.protocol == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart rebinds past TIME_WAIT
        sock.bind((LISTEN_ADDRESS, rule.host_port))
        if rule.protocol == "tcp":
            sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still be talking
    except OSError:
        writer.close()


async def _serve_tcp(sock: socket.socket, guest: str, guest_port: int) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            guest_r, guest_w = await asyncio.open_connection(guest, guest_port)
        except OSError:
            client_w.close()  # the guest does not listen (yet): the client sees a closed connection
            return
        try:
            await asyncio.gather(_pipe(client_r, guest_w), _pipe(guest_r, client_w))
        finally:
            guest_w.close()
            client_w.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


class _GuestSide(asyncio.DatagramProtocol):
    """One UDP client's socket towards the guest: replies go back to that client."""

    def __init__(self, reply: asyncio.DatagramTransport, client: tuple[str, int]) -> None:
        self.reply = reply
        self.client = client
        self.last = asyncio.get_running_loop().time()

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        self.last = asyncio.get_running_loop().time()
        self.reply.sendto(data, self.client)


class _HostSide(asyncio.DatagramProtocol):
    def __init__(self, guest: str, guest_port: int) -> None:
        self.guest = guest
        self.guest_port = guest_port
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple[str, int], tuple[asyncio.DatagramTransport, _GuestSide]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        client = (str(addr[0]), int(addr[1]))
        session = self.sessions.get(client)
        if session is not None:
            session[1].last = asyncio.get_running_loop().time()
            session[0].sendto(data)
            return
        asyncio.get_running_loop().create_task(self._open(client, data))

    async def _open(self, client: tuple[str, int], first: bytes) -> None:
        reply = self.transport
        assert reply is not None  # datagrams arrive only after connection_made
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _GuestSide(reply, client), remote_addr=(self.guest, self.guest_port)
        )
        self.sessions[client] = (transport, protocol)
        transport.sendto(first)

    def expire(self) -> None:
        now = asyncio.get_running_loop().time()
        for client, (transport, protocol) in list(self.sessions.items()):
            if now - protocol.last > UDP_IDLE_SECONDS:
                transport.close()
                del self.sessions[client]


async def _serve_udp(sock: socket.socket, guest: str, guest_port: int) -> None:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: _HostSide(guest, guest_port), sock=sock)
    while True:
        await asyncio.sleep(UDP_IDLE_SECONDS / 4)
        protocol.expire()


async def serve(guest: str, bound: Sequence[tuple[Rule, socket.socket]]) -> None:
    tasks = [
        _serve_tcp(sock, guest, rule.guest_port) if rule.protocol == "tcp" else _serve_udp(sock, guest, rule.guest_port)
        for rule, sock in bound
    ]
    await asyncio.gather(*tasks)


def main(argv: Sequence[str]) -> int:
    try:
        guest = str(ipaddress.IPv4Address(argv[0]))
        rules = [Rule.parse(arg) for arg in argv[1:]]
    except (IndexError, ValueError) as exc:
        print(f"usage: python -m banger_bridge.forward GUEST_IP PROTO:HOST:GUEST...: {exc}", file=sys.stderr)
        return 2
    bound: list[tuple[Rule, socket.socket]] = []
    for rule in rules:
        try:
            bound.append((rule, bind(rule)))
        except OSError as exc:
            print(f"host port {rule.host_port}/{rule.protocol} on {LISTEN_ADDRESS}: {exc.strerror}", file=sys.stderr)
            return 1
    print(READY, flush=True)
    # Nobody reads our stdout or stderr after this: point them at /dev/null rather than a closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    asyncio.run(serve(guest, bound))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
