"""Each VM's transient runtime handles (VMM process, network attachment): memory plus ``handles.json``.

The file lets a restarted daemon re-adopt the VMs that kept running, so its
format is a compatibility promise between daemon versions: ``{"net": ...,
"vmm": ..., "booted": "cold"|"warm"}``, the first two the JSON form of the contract's :class:`NetAttachment` and
:class:`VmProcess` dataclasses (field names as keys), a key left out while
that handle does not exist yet.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import JsonValue, TypeAdapter, ValidationError

from banger_core.daemon.layout import Layout
from banger_hookspecs import NetAttachment, VmProcess

log = logging.getLogger("banger.vms")

_ATTACHMENT = TypeAdapter(NetAttachment)
_PROCESS = TypeAdapter(VmProcess)


@dataclass(frozen=True)
class VmHandles:
    """What a running (or half-started) VM holds: its NIC once attached, its VMM process once launched."""

    net: NetAttachment | None = None
    vmm: VmProcess | None = None
    #: How the running guest came up: ``cold`` (kernel boot) or ``warm`` (restored from a template).
    booted: Literal["cold", "warm"] | None = None

    def to_json(self) -> dict[str, JsonValue]:
        """The ``handles.json`` form (also what :func:`~banger_core.daemon.vm.views.vm_view` reads)."""
        data: dict[str, JsonValue] = {}
        if self.net is not None:
            data["net"] = _ATTACHMENT.dump_python(self.net, mode="json")
        if self.vmm is not None:
            data["vmm"] = _PROCESS.dump_python(self.vmm, mode="json")
        if self.booted is not None:
            data["booted"] = self.booted
        return data

    @classmethod
    def from_json(cls, data: JsonValue) -> VmHandles:
        """Parse the ``handles.json`` form; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        net, vmm, booted = data.get("net"), data.get("vmm"), data.get("booted")
        if booted not in (None, "cold", "warm"):
            raise ValueError(f"booted is {booted!r}, not cold or warm")
        try:
            return cls(
                # Files written by hand or by older daemons may leave out dns_address (None then).
                net=_ATTACHMENT.validate_python({"dns_address": None, **net}) if isinstance(net, dict) else None,
                vmm=_PROCESS.validate_python(vmm) if isinstance(vmm, dict) else None,
                booted=booted,  # type: ignore[arg-type]  # checked above
            )
        except ValidationError as exc:
            raise ValueError(str(exc).splitlines()[0] if str(exc) else "invalid handles") from exc


class HandleStore:
    """``handles.json`` per VM directory, cached in memory."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.cache: dict[str, VmHandles] = {}

    def path(self, vm_id: str) -> Path:
        return self.layout.vm_dir(vm_id) / "handles.json"

    def write(self, vm_id: str, handles: VmHandles) -> None:
        path = self.path(vm_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(handles.to_json(), fh, indent=2)
        os.replace(tmp, path)
        self.cache[vm_id] = handles

    def read(self, vm_id: str) -> VmHandles | None:
        """The VM's handles, from memory or its file; None when it has none (or they are unreadable)."""
        if vm_id in self.cache:
            return self.cache[vm_id]
        path = self.path(vm_id)
        try:
            handles = VmHandles.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # The VM is then treated as having no process: reconcile demotes it, its disks stay.
            log.warning("ignoring %s: %s", path, exc)
            return None
        if handles.net is None and handles.vmm is None:
            return None
        self.cache[vm_id] = handles
        return handles

    def drop(self, vm_id: str) -> None:
        self.cache.pop(vm_id, None)
        self.path(vm_id).unlink(missing_ok=True)

    def forget(self, vm_id: str) -> None:
        """Forget the cached handles only (the VM directory is being removed)."""
        self.cache.pop(vm_id, None)
