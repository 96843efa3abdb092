"""A warm VM's agent token rotation survives the daemon dying at any point of it.

The guest side is the real agent code (banger_hookspecs.guest_agent) serving a Unix socket, as QEMU's
virtio-serial chardev does; the host side runs in a separate process that really dies (SIGKILL at the
``agent:token-rotated`` crash point: the guest took the new token, the host has not renamed it into
place). The next reader of the VM's token must still get in.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.common.agent_client import AgentClient
from banger_core.common.agent_transport import VirtioSerialTransport
from banger_core.daemon.agent.client import HOST_TOKEN_FILE, PENDING_TOKEN_FILE, rotate_vm_token, settled_token
from banger_hookspecs import guest_agent as wire

pytestmark = pytest.mark.integration
TEMPLATE_TOKEN = "7" * 64
REPO = Path(__file__).resolve().parents[2]

ROTATE = """
import sys
from pathlib import Path
from banger_core.common.agent_client import AgentClient
from banger_core.daemon.agent.client import rotate_vm_token
from banger_core.common.agent_transport import VirtioSerialTransport
socket_path, vm_dir, token = sys.argv[1:]
client = AgentClient(VirtioSerialTransport(Path(socket_path)), token)
rotate_vm_token(client, Path(vm_dir), timeout=30)
"""


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A guest agent on a Unix socket; yields (its socket, its token file)."""
    token_file = tmp_path / "guest-token"
    token_file.write_text(TEMPLATE_TOKEN)
    agent = wire.Agent(str(token_file))
    socket_path = tmp_path / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            with conn:
                try:
                    agent.serve(wire.Conn(conn.fileno()))
                except wire.Disconnected:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield socket_path, token_file
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(timeout=10)


@pytest.fixture
def vm_dir(tmp_path: Path) -> Path:
    """A restored VM's state dir: it starts with the template's token."""
    directory = tmp_path / "vm"
    directory.mkdir(mode=0o700)
    (directory / HOST_TOKEN_FILE).write_text(TEMPLATE_TOKEN)
    return directory


def test_a_daemon_killed_after_the_guest_took_the_new_token_leaves_the_agent_usable(
    guest: tuple[Path, Path], vm_dir: Path
) -> None:
    socket_path, guest_token = guest
    env = {**os.environ, "BANGER_TESTING": "1", "BANGER_TEST_CRASH_AT": "agent:token-rotated", "PYTHONPATH": str(REPO)}
    died = subprocess.run(
        [sys.executable, "-c", ROTATE, str(socket_path), str(vm_dir), TEMPLATE_TOKEN],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    new_token = guest_token.read_text()
    assert new_token != TEMPLATE_TOKEN  # the guest took the new token before the crash
    assert (vm_dir / HOST_TOKEN_FILE).read_text() == TEMPLATE_TOKEN  # ... and the host had not renamed it

    transport = VirtioSerialTransport(socket_path)
    token = settled_token(transport, vm_dir, None)
    assert token == new_token
    assert AgentClient(transport, token).health(timeout=30)["ok"] is True
    # Settled for good: the pending token is the VM's token now.
    assert (vm_dir / HOST_TOKEN_FILE).read_text() == new_token
    assert not (vm_dir / PENDING_TOKEN_FILE).exists()
    assert oct((vm_dir / HOST_TOKEN_FILE).stat().st_mode & 0o777) == "0o600"


def test_a_pending_token_the_guest_never_took_is_dropped(guest: tuple[Path, Path], vm_dir: Path) -> None:
    socket_path, guest_token = guest
    (vm_dir / PENDING_TOKEN_FILE).write_text("8" * 64)  # the daemon died before the guest took it
    transport = VirtioSerialTransport(socket_path)
    assert settled_token(transport, vm_dir, None) == TEMPLATE_TOKEN
    assert guest_token.read_text() == TEMPLATE_TOKEN
    assert not (vm_dir / PENDING_TOKEN_FILE).exists()


def test_an_uninterrupted_rotation_leaves_only_the_new_token(guest: tuple[Path, Path], vm_dir: Path) -> None:
    socket_path, guest_token = guest
    client = AgentClient(VirtioSerialTransport(socket_path), TEMPLATE_TOKEN)
    rotate_vm_token(client, vm_dir, timeout=30)
    assert client.token == guest_token.read_text() == (vm_dir / HOST_TOKEN_FILE).read_text() != TEMPLATE_TOKEN
    assert not (vm_dir / PENDING_TOKEN_FILE).exists()
    assert client.health(timeout=30)["ok"] is True
