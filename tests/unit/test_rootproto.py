"""The bangerd-root wire protocol and call dispatch, over real Unix sockets (no root, no host changes).

The server object here records calls instead of touching netlink: the root
implementation is tested for real in ``tests/integration/test_root_helper*.py``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger_core.common.errors import HostOpError
from banger_core.host.rootclient import RootHelperHostOps
from banger_core.host.rootd import RootHelper
from banger_core.host.rootproto import ProtocolError, check_call, check_value, host_ops_methods, recv_frame, send_frame
from banger_hookspecs import HostOps

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Point:
    x: int
    path: Path


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (1, int, 1),
        (True, bool, True),
        ("/a/b", Path, Path("/a/b")),
        (["a", "b"], list[str], ["a", "b"]),
        ([1, 2], tuple[int, ...], (1, 2)),
        ({"k": 1}, dict[str, int], {"k": 1}),
        (None, int | None, None),
        ({"x": 1, "path": "/p"}, Point, Point(1, Path("/p"))),
    ],
)
def test_values_are_checked_and_typed_by_the_annotation(value: object, annotation: object, expected: object) -> None:
    assert check_value(value, annotation, "v") == expected


@pytest.mark.parametrize(
    ("value", "annotation", "message"),
    [
        (True, int, "v must be an integer"),
        ("1", int, "v must be an integer"),
        ("relative/p", Path, "v must be an absolute path"),
        (["a", 1], list[str], r"v\[1\] must be a string"),
        ({"x": 1}, Point, r"v must have exactly the fields \['path', 'x'\]"),
    ],
)
def test_wrong_values_are_refused_naming_where(value: object, annotation: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        check_value(value, annotation, "v")


def test_exactly_the_hostops_protocol_is_callable() -> None:
    assert set(host_ops_methods()) == {n for n in vars(HostOps) if not n.startswith("_") and callable(vars(HostOps)[n])}
    with pytest.raises(ProtocolError, match="unknown method 'close'"):
        check_call({"method": "close", "args": {}})


class Recording:
    """The helper's server object stand-in: records calls; ``bgrbad`` is refused like NetlinkHostOps would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    def list_links(self, prefix: str) -> list[str]:
        self.calls.append(("list_links", {"prefix": prefix}))
        return [f"{prefix}0"]

    def delete_tap(self, name: str) -> None:
        if name == "bgrbad":
            raise ValueError(f"invalid tap name {name!r}")
        raise HostOpError(f"tap {name} is busy")

    def create_tap(self, name: str, bridge: str, owner_uid: int) -> None:
        self.calls.append(("create_tap", {"name": name, "bridge": bridge, "owner_uid": owner_uid}))

    def bind_dns_socket(self, address: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        return sock


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RootHelperHostOps, Recording]]:
    """A RootHelper on a real Unix socket, owner = this test's uid."""
    ops = Recording()
    helper = RootHelper(ops, os.getuid(), os.getgid())  # type: ignore[arg-type]
    path = tmp_path / "h.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    stop = threading.Event()
    server = threading.Thread(target=helper.serve, args=(listener, stop), daemon=True)
    server.start()
    try:
        yield RootHelperHostOps(path, timeout=10), ops
    finally:
        stop.set()
        server.join(5)
        listener.close()


def test_a_call_round_trip_with_results_errors_and_a_passed_socket(served: tuple[RootHelperHostOps, Recording]) -> None:
    client, ops = served
    assert client.list_links("bgr") == ["bgr0"]
    with pytest.raises(ValueError, match="invalid tap name 'bgrbad'"):
        client.delete_tap("bgrbad")
    with pytest.raises(HostOpError, match="tap bgrx is busy"):
        client.delete_tap("bgrx")
    with client.bind_dns_socket("172.16.0.1", 53) as sock:
        assert sock.type == socket.SOCK_DGRAM and sock.getsockname()[0] == "127.0.0.1"
    with pytest.raises(HostOpError, match="this bangerd-root does not implement ensure_bridge"):
        client.ensure_bridge("banger0", "172.16.0.1/24")
    assert ops.calls == [("list_links", {"prefix": "bgr"})]


def test_uid_arguments_must_be_the_owners(served: tuple[RootHelperHostOps, Recording]) -> None:
    client, ops = served
    with pytest.raises(HostOpError, match=f"create_tap\\(owner_uid={os.getuid() + 1}\\): only the owner uid"):
        client.create_tap("bgrx", "banger0", os.getuid() + 1)
    client.create_tap("bgrx", "banger0", os.getuid())
    assert ops.calls == [("create_tap", {"name": "bgrx", "bridge": "banger0", "owner_uid": os.getuid()})]


def test_a_method_the_client_has_no_line_for_is_forwarded_by_name(
    served: tuple[RootHelperHostOps, Recording],
) -> None:
    """How a HostOps method added later (the jailer's) reaches the helper with no client change."""
    client, ops = served
    forward = RootHelperHostOps.__getattr__(client, "create_tap")
    forward("bgry", "banger0", owner_uid=os.getuid())
    assert ops.calls == [("create_tap", {"name": "bgry", "bridge": "banger0", "owner_uid": os.getuid()})]
    with pytest.raises(AttributeError):
        RootHelperHostOps.__getattr__(client, "no_such_method")


def test_oversized_and_truncated_frames_are_protocol_errors() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall((1 << 30).to_bytes(4, "big"))
        with pytest.raises(ProtocolError, match="exceeds"):
            recv_frame(right)
    left, right = socket.socketpair()
    with left, right:
        send_frame(left, {"method": "x"})
        left.shutdown(socket.SHUT_WR)
        assert recv_frame(right) == ({"method": "x"}, [])
        with pytest.raises(ProtocolError, match="closed the connection without sending a frame"):
            recv_frame(right)
