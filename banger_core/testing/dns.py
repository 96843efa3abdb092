"""The daemon's DNS server in a thread of its own, for synchronous tests and benchmarks.

Example::

    with DnsServerThread(DnsServer({"web": "172.16.0.7"}.get), binds=[("127.0.0.1", 0)]) as running:
        address, port = running.addresses[0]
        ...  # ask it with dig or dnslib
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence
from types import TracebackType

from banger_core.daemon.dns import DnsServer


class DnsServerThread:
    """Runs a :class:`DnsServer` in its own thread and event loop, for synchronous callers.

    Args:
        server: the server to run.
        binds: ``(address, port)`` pairs, as for :meth:`DnsServer.start`.
        sockets: already bound UDP sockets, as for :meth:`DnsServer.start`.
    """

    def __init__(
        self, server: DnsServer, binds: Sequence[tuple[str, int]] = (), sockets: Sequence[socket.socket] = ()
    ) -> None:
        self.server = server
        self.binds = list(binds)
        self.sockets = list(sockets)
        self.addresses: list[tuple[str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> list[tuple[str, int]]:
        """Start listening; returns the addresses, or raises what :meth:`DnsServer.start` raised
        (``TimeoutError`` if it did not return within ``timeout`` seconds)."""
        self._thread = threading.Thread(target=self._run, name="banger-dns", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the DNS server did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error
        return self.addresses

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self.addresses = loop.run_until_complete(self.server.start(self.binds, self.sockets))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.server.stop())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, close the sockets and join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> DnsServerThread:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
