"""The daemon's side of a VM's guest agent: its token (made, staged, rotated crash-safely, settled) and
the :class:`~banger_core.common.agent_client.AgentClient` of a running VM."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from banger_core.common.agent_client import AgentClient
from banger_core.common.agent_transport import (
    QEMU_AGENT_SOCKET,
    Transport,
    VirtioSerialTransport,
    VsockUdsTransport,
)
from banger_core.common.errors import AgentAuthError, AgentUnavailable
from banger_core.daemon.crashpoint import crash_point
from banger_hookspecs import guest_agent as wire

if TYPE_CHECKING:
    from banger_core.daemon.layout import Layout
    from banger_core.daemon.runtime import Runtime

#: The VM's token on the host, in its state dir (0600).
HOST_TOKEN_FILE = "agent.token"  # noqa: S105 (a file name)
#: The same token on the work disk (mounted at /root in the guest).
WORK_DISK_TOKEN = Path(wire.TOKEN_PATH).relative_to("/root")
#: A new token the host keeps until the guest has taken it (see :func:`rotate_vm_token`).
PENDING_TOKEN_FILE = "agent.token.pending"  # noqa: S105 (a file name)
#: Seconds :func:`settled_token` gives each probe of a token.
SETTLE_TIMEOUT = 30.0
#: Serialises clients of one VM's agent channel.
LOCK_FILE = "agent.lock"


def new_token() -> str:
    """A fresh per-VM agent token (64 hex digits)."""
    return secrets.token_hex(32)


def stage_token(work_staging: Path, token: str) -> None:
    """Put ``token`` on the work disk being staged (``/root/.banger/agent-token``, 0700 dir, 0600 file)."""
    path = work_staging / WORK_DISK_TOKEN
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)


def write_host_token(vm_dir: Path, token: str) -> None:
    _write_new_secret(vm_dir / HOST_TOKEN_FILE, token)


def _write_new_secret(path: Path, token: str, *, sync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())


def rotate_vm_token(client: AgentClient, vm_dir: Path, timeout: float) -> None:
    """Give the guest behind ``client`` a new token and make it the VM's, surviving a crash at any point."""
    with token_rotation(client, vm_dir) as token:
        client.rotate_token(token, timeout)


@contextmanager
def token_rotation(client: AgentClient, vm_dir: Path) -> Iterator[str]:
    """A new token for the VM, for the block to hand to the guest (``rotate_token``, or with the identity).

    The new token is on the host (``agent.token.pending``, synced) before the guest takes it, and
    becomes ``agent.token`` by rename after the block: a daemon that dies in between leaves both
    files, and :func:`settled_token` finds which one the guest accepts. A block that fails leaves
    the pending file for that same check (the guest may have taken the token before the failure).
    """
    token = new_token()
    pending = vm_dir / PENDING_TOKEN_FILE
    pending.unlink(missing_ok=True)
    _write_new_secret(pending, token, sync=True)
    yield token
    crash_point("agent:token-rotated")
    os.replace(pending, vm_dir / HOST_TOKEN_FILE)
    _sync_dir(vm_dir)
    client.token = token


def settled_token(transport: Transport, vm_dir: Path, lock_path: Path | None) -> str:
    """The VM's agent token; after a rotation a crash interrupted, whichever of the two the guest accepts.

    Current first; the pending one when the guest refuses the current (it took the new one and the
    host died before the rename), which then becomes current. A pending token the guest refuses is
    dropped (the host died before the guest took it). While the agent cannot be asked, nothing moves.
    """
    current_path, pending_path = vm_dir / HOST_TOKEN_FILE, vm_dir / PENDING_TOKEN_FILE
    try:
        current = current_path.read_text().strip()
    except FileNotFoundError:
        raise AgentUnavailable("this VM has no guest agent token (created by an older banger): recreate it") from None
    try:
        pending = pending_path.read_text().strip()
    except FileNotFoundError:
        return current
    try:
        AgentClient(transport, current, lock_path).health(timeout=SETTLE_TIMEOUT)
    except AgentAuthError:
        AgentClient(transport, pending, lock_path).health(timeout=SETTLE_TIMEOUT)  # refused too: raises
        os.replace(pending_path, current_path)
        _sync_dir(vm_dir)
        return pending
    pending_path.unlink(missing_ok=True)
    return current


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def guest_cid(vm_id: str) -> int:
    """The VM's vsock CID, stable per VM: 3 and up (0-2 are reserved), spread by its random id.

    vhost-vsock CIDs are host-wide; a 32-bit space keeps two VMs from colliding in practice.
    """
    return 3 + int(vm_id, 16) % (0xFFFFFFFF - 3)


def agent_client_for(rt: Runtime, vm_id: str) -> AgentClient:
    """The agent client of a running VM, from its handles, run dir and token (see :func:`agent_client_at`)."""
    return agent_client_at(rt.layout, vm_id)


def agent_client_at(layout: Layout, vm_id: str) -> AgentClient:
    """The agent client of a running VM under ``layout``.

    Raises:
        AgentUnavailable: the VM has no agent token (created before agents) or no VMM running.
    """
    from banger_core.daemon.vm.handles import HandleStore

    run_dir = layout.vm_run_dir(vm_id)
    if not (layout.vm_dir(vm_id) / HOST_TOKEN_FILE).exists():
        raise AgentUnavailable("this VM has no guest agent token (created by an older banger): recreate it")
    handles = HandleStore(layout).read(vm_id)
    if handles is None or handles.vmm is None:
        raise AgentUnavailable("the VM is not running: start it first")
    transport: Transport
    vsock = handles.vmm.extra.get("vsock_socket")
    if vsock:
        transport = VsockUdsTransport(Path(vsock), wire.VSOCK_PORT)
    else:
        transport = VirtioSerialTransport(run_dir / QEMU_AGENT_SOCKET)
    lock = run_dir / LOCK_FILE
    return AgentClient(transport, settled_token(transport, layout.vm_dir(vm_id), lock), lock)
