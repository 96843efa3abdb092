"""How the host reaches a guest's agent: one small interface, one class per VMM channel.

* QEMU: a ``virtserialport`` on a Unix-socket chardev (``agent.sock`` in the VM's
  run dir). QEMU serves one client at a time on it, so callers hold
  :func:`channel_lock` while connected.
* Firecracker: its userspace vsock, a Unix socket on which the host writes
  ``CONNECT <port>\\n`` and reads ``OK <host port>\\n`` before the stream begins.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Protocol

from banger_core.common.errors import AgentUnavailable
from banger_hookspecs import boot

#: The chardev socket QEMU serves in the VM's run dir.
QEMU_AGENT_SOCKET = boot.AGENT_SOCKET
#: Longest reply line Firecracker's vsock muxer sends to ``CONNECT`` (``OK 1073741824\n``).
MAX_CONNECT_REPLY = 64


class Transport(Protocol):
    """Opens a fresh byte stream to the guest agent."""

    def connect(self, timeout: float) -> socket.socket:
        """A connected stream socket, or :class:`AgentUnavailable`."""
        ...

    def describe(self) -> str:
        """For messages: what this channel is."""
        ...


def _unix_connect(path: Path, timeout: float, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise AgentUnavailable(f"cannot reach the guest agent through {what} {path}: {exc.strerror or exc}") from None
    return sock


class VirtioSerialTransport:
    """QEMU's chardev socket for the agent's virtio-serial port."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def connect(self, timeout: float) -> socket.socket:
        return _unix_connect(self.socket_path, timeout, "virtio-serial socket")

    def describe(self) -> str:
        return f"virtio-serial {self.socket_path}"


class VsockUdsTransport:
    """Firecracker's vsock Unix socket: ``CONNECT <port>`` then the stream."""

    def __init__(self, uds_path: Path, port: int) -> None:
        if not 0 < port < 1 << 32:
            raise ValueError(f"invalid vsock port {port}")
        self.uds_path = uds_path
        self.port = port

    def connect(self, timeout: float) -> socket.socket:
        sock = _unix_connect(self.uds_path, timeout, "vsock socket")
        try:
            sock.sendall(f"CONNECT {self.port}\n".encode())
            reply = bytearray()
            # Byte by byte: anything after the newline already belongs to the agent's stream.
            while not reply.endswith(b"\n"):
                if len(reply) >= MAX_CONNECT_REPLY:
                    raise AgentUnavailable(
                        f"vsock {self.uds_path}: CONNECT reply longer than {MAX_CONNECT_REPLY} bytes"
                    )
                byte = sock.recv(1)
                if not byte:
                    raise AgentUnavailable(
                        f"vsock {self.uds_path}: connection closed after CONNECT {self.port} "
                        "(is banger-agent running in the guest?)"
                    )
                reply += byte
            words = reply.decode("ascii", errors="replace").split()
            if len(words) != 2 or words[0] != "OK" or not words[1].isdigit():
                raise AgentUnavailable(f"vsock {self.uds_path}: unexpected CONNECT reply {bytes(reply)!r}")
        except OSError as exc:
            sock.close()
            raise AgentUnavailable(f"vsock {self.uds_path}: {exc}") from None
        except AgentUnavailable:
            sock.close()
            raise
        return sock

    def describe(self) -> str:
        return f"vsock {self.uds_path} port {self.port}"
