"""One HTTP exchange with bangerd over its Unix socket, standard library only: the CLI's fast path.

Importing httpx costs ~90 ms and even ``http.client`` ~25 ms (its header
parser pulls in the ``email`` package), more than the request itself
(docs/performance.md). A query needs none of it: the request goes out as
HTTP/1.0, so the daemon answers with a body delimited by closing the
connection (no chunked encoding, no keep-alive), and the answer is read to
the end, its status taken from the first line. Streams (progress events,
logs) still go through httpx in :mod:`banger_core.client.sdk`.
"""

from __future__ import annotations

import socket

#: Largest answer read: far above any listing, a guard against a runaway peer.
MAX_ANSWER = 64 << 20


class Unreachable(OSError):
    """Nothing accepted the connection (no daemon listening): the request was never sent."""


class BadAnswer(OSError):
    """The peer's answer is not an HTTP response (or is too large)."""


def exchange(
    socket_path: str, method: str, target: str, body: bytes | None = None, *, timeout: float
) -> tuple[int, bytes]:
    """Send ``method target`` (``body`` as JSON) and return the status code and the body of the answer.

    ``timeout`` bounds connecting and each read or write. Raises :class:`Unreachable`
    when nothing listens, :class:`BadAnswer` for a garbled answer, :class:`OSError`
    (``TimeoutError`` included) when the connection fails midway.
    """
    head = f"{method} {target} HTTP/1.0\r\nHost: bangerd\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except OSError as exc:
            raise Unreachable(f"nothing answers on {socket_path}: {exc.strerror or exc}") from exc
        sock.sendall(head.encode("ascii") + b"\r\n" + (body or b""))
        chunks: list[bytes] = []
        received = 0
        while chunk := sock.recv(1 << 16):
            received += len(chunk)
            if received > MAX_ANSWER:
                raise BadAnswer(f"the answer on {socket_path} exceeds {MAX_ANSWER >> 20} MiB")
            chunks.append(chunk)
    header, separator, content = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].split(b" ", 2)
    if not separator or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
        raise BadAnswer(f"the answer on {socket_path} is not HTTP: {header[:80]!r}")
    return int(status_line[1]), content
