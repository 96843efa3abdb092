"""Unit tests: the QMP client against a scripted peer (real QEMU is in test_qemu_guest.py)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_qemu.qmp import QmpClient, QmpError

pytestmark = pytest.mark.unit


@pytest.fixture
def peer(run_dir: Path) -> Iterator[tuple[Path, list[dict[str, object]]]]:
    """A one-connection QMP peer: greeting, capabilities, then an event before each reply."""
    path = run_dir / "qmp.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    received: list[dict[str, object]] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            stream.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
            stream.flush()
            for line in stream:
                request = json.loads(line)
                received.append(request)
                if request["execute"] == "qmp_capabilities":
                    stream.write(b'{"return": {}}\r\n')
                elif request["execute"] == "system_powerdown":
                    stream.write(b'{"event": "POWERDOWN", "timestamp": {}}\r\n{"return": {}}\r\n')
                else:
                    stream.write(
                        b'{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\r\n'
                    )
                stream.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, received
    server.close()
    thread.join(5)


def test_events_before_the_reply_are_skipped_and_errors_raise(peer: tuple[Path, list[dict[str, object]]]) -> None:
    path, received = peer
    with QmpClient(path) as qmp:
        assert qmp.execute("system_powerdown") == {}
        with pytest.raises(QmpError, match="QEMU refused nope: The command nope has not been found"):
            qmp.execute("nope", {"x": 1})
    assert received == [
        {"execute": "qmp_capabilities"},
        {"execute": "system_powerdown"},
        {"execute": "nope", "arguments": {"x": 1}},
    ]


def test_missing_socket_is_a_qmp_error(run_dir: Path) -> None:
    with pytest.raises(QmpError, match="cannot connect to QMP socket"):
        QmpClient(run_dir / "nothing.sock").connect()
