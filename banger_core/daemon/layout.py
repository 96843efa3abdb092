"""Where each piece of state lives; every path derives from a validated name or id."""

from __future__ import annotations

import re
from pathlib import Path

from banger_core.common.instance import LOCK_NAME
from banger_core.common.names import validate_image_name

_VM_ID_RE = re.compile(r"^[0-9a-f]{16}$")
#: sun_path is 108 bytes; leave room for the longest per-VM socket name.
MAX_SOCKET_PATH = 100


class Layout:
    """State under ``state_dir`` (durable), sockets under ``runtime_dir``; both private (0700)."""

    def __init__(self, state_dir: Path, runtime_dir: Path) -> None:
        self.state_dir = state_dir
        self.runtime_dir = runtime_dir
        self.db = state_dir / "banger.db"
        self.images = state_dir / "images"
        self.kernels = state_dir / "kernels"
        self.vms = state_dir / "vms"
        self.ssh = state_dir / "ssh"
        self.log_file = state_dir / "logs" / "bangerd.log"
        self.socket = runtime_dir / "bangerd.sock"
        #: Held by the daemon for its whole life (see :mod:`banger_core.common.instance`): one daemon per
        #: state dir, and one per runtime dir so two state dirs never fight over one socket.
        self.state_lock = state_dir / LOCK_NAME
        self.runtime_lock = runtime_dir / LOCK_NAME

    def image_dir(self, name: str) -> Path:
        return self.images / validate_image_name(name)

    def kernel_dir(self, ref: str) -> Path:
        return self.kernels / validate_image_name(ref, "kernel")

    def vm_dir(self, vm_id: str) -> Path:
        if not _VM_ID_RE.match(vm_id):
            raise ValueError(f"invalid VM id {vm_id!r}")
        return self.vms / vm_id

    def vm_run_dir(self, vm_id: str) -> Path:
        if not _VM_ID_RE.match(vm_id):
            raise ValueError(f"invalid VM id {vm_id!r}")
        return self.runtime_dir / "vms" / vm_id
