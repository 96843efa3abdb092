"""A minimal QMP client: one short-lived connection per question.

QEMU's monitor serves one client at a time, so banger never keeps a
connection open: connect, negotiate, ask, close.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

#: Longest line we accept from QEMU; replies banger asks for are tiny.
_MAX_LINE = 1 << 20


class QmpError(Exception):
    """QMP failed: no socket, no answer, or QEMU returned an error."""


class QmpClient:
    """Talks QMP over the Unix socket at ``path``.

    Example::

        with QmpClient(Path("/run/vm/qmp.sock")) as qmp:
            status = qmp.execute("query-status")["status"]
    """

    def __init__(self, path: Path, timeout: float = 2.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def __enter__(self) -> QmpClient:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Connect, read QEMU's greeting and leave capabilities negotiation mode."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise QmpError(f"cannot connect to QMP socket {self.path}: {exc.strerror or exc}") from None
        self._sock = sock
        self._reader = sock.makefile("rb")
        greeting = self._read()
        if "QMP" not in greeting:
            self.close()
            raise QmpError(f"{self.path} does not speak QMP")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read(self) -> dict[str, Any]:
        try:
            line = self._reader.readline(_MAX_LINE)
        except OSError as exc:
            raise QmpError(f"QMP read failed on {self.path}: {exc}") from None
        if not line:
            raise QmpError(f"QEMU closed the QMP connection on {self.path}")
        try:
            message = json.loads(line)
        except ValueError:
            raise QmpError(f"QEMU sent invalid JSON on {self.path}") from None
        if not isinstance(message, dict):
            raise QmpError(f"QEMU sent an unexpected QMP message on {self.path}")
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command`` and return its ``return`` value; asynchronous events are skipped.

        Raises:
            QmpError: not connected, connection lost, or QEMU answered with an error.
        """
        return self.execute_with_fd(command, arguments, None)

    def execute_with_fd(self, command: str, arguments: dict[str, Any] | None, fd: int | None) -> Any:
        """:meth:`execute`, passing ``fd`` along (SCM_RIGHTS), as ``getfd`` wants it."""
        if self._sock is None:
            raise QmpError("QMP client is not connected")
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        payload = json.dumps(request).encode() + b"\n"
        try:
            if fd is None:
                self._sock.sendall(payload)
            else:
                sent = socket.send_fds(self._sock, [payload], [fd])
                self._sock.sendall(payload[sent:])
        except OSError as exc:
            raise QmpError(f"QMP write failed on {self.path}: {exc}") from None
        while True:
            message = self._read()
            if "return" in message:
                return message["return"]
            if "error" in message:
                error = message["error"]
                desc = error.get("desc", error) if isinstance(error, dict) else error
                raise QmpError(f"QEMU refused {command}: {desc}")
            # Anything else is an event (POWERDOWN, SHUTDOWN, ...): not our reply.
