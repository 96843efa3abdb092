"""Each VM's transient runtime handles (VMM process, network attachment): memory plus ``handles.json``.

The file lets a restarted daemon re-adopt the VMs that kept running.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from banger_core.daemon.layout import Layout
from banger_hookspecs import GuestNetConfig, NetAttachment, NicSpec, PortForward, VmProcess


def attachment_from_dict(data: dict[str, Any]) -> NetAttachment:
    nic = dict(data["nic"])
    nic["forwards"] = tuple(PortForward(**f) for f in nic.get("forwards", ()))
    return NetAttachment(
        backend=data["backend"],
        nic=NicSpec(**nic),
        guest=GuestNetConfig(**data["guest"]),
        ssh_host=data["ssh_host"],
        ssh_port=int(data["ssh_port"]),
        dns_address=data.get("dns_address"),
        state=dict(data.get("state", {})),
    )


def process_from_dict(data: dict[str, Any]) -> VmProcess:
    return VmProcess(
        backend=data["backend"],
        pid=int(data["pid"]),
        start_time=int(data["start_time"]),
        control_socket=str(data["control_socket"]),
        extra=dict(data.get("extra", {})),
    )


def jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(asdict(obj), default=str))


class HandleStore:
    """``handles.json`` per VM directory, cached in memory."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.cache: dict[str, dict[str, Any]] = {}

    def _path(self, vm_id: str) -> Path:
        return self.layout.vm_dir(vm_id) / "handles.json"

    def write(self, vm_id: str, handles: dict[str, Any]) -> None:
        path = self._path(vm_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(handles, fh, indent=2)
        os.replace(tmp, path)
        self.cache[vm_id] = handles

    def read(self, vm_id: str) -> dict[str, Any] | None:
        if vm_id in self.cache:
            return self.cache[vm_id]
        try:
            data = json.loads(self._path(vm_id).read_text())
        except (OSError, ValueError):
            return None
        if isinstance(data, dict):
            self.cache[vm_id] = data
            return data
        return None

    def drop(self, vm_id: str) -> None:
        self.cache.pop(vm_id, None)
        self._path(vm_id).unlink(missing_ok=True)

    def forget(self, vm_id: str) -> None:
        """Forget the cached handles only (the VM directory is being removed)."""
        self.cache.pop(vm_id, None)
