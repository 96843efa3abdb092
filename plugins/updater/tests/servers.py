"""Servers the updater's tests talk to: a release directory over HTTP on 127.0.0.1, a stand-in bangerd."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        lab = self.server.lab
        lab.requests.append((self.path, self.headers.get("Range")))
        path = (lab.root / self.path.lstrip("/")).resolve()
        if not path.is_file() or lab.root.resolve() not in path.parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        wanted = self.headers.get("Range")
        if wanted and lab.honour_range and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes=") : -1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in lab.cut:  # a transfer that breaks off midway, once
            self.wfile.write(body[: lab.cut.pop(self.path)])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body + lab.extra)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    lab: ReleaseServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping its connection is no error here; socketserver would print a traceback to
        # sys.stderr, which an in-process CLI run may be capturing as banger's own output.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ReleaseServer:
    """A static file server on 127.0.0.1 for ``root`` that honours Range and can misbehave on request."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        #: URL path -> bytes of its next answer's body sent before the connection is cut (once).
        self.cut: dict[str, int] = {}
        self.honour_range = True
        #: Sent after every body (beyond its Content-Length): a server sending more than it should.
        self.extra = b""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.lab = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[ReleaseServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=10)


class FakeDaemon:
    """bangerd's ``GET /v1/daemon`` on a Unix socket: it answers as the version ``current`` points at."""

    def __init__(self, socket_path: Path, current: Path) -> None:
        self.socket_path = socket_path
        self.current = current
        self.in_progress: dict[str, int] = {}
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(socket_path))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                version = Path(self.current.readlink()).name
                body = json.dumps({"version": version, "in_progress": self.in_progress}).encode()
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)

    @contextmanager
    def running(self) -> Iterator[FakeDaemon]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)
            self._sock.close()
