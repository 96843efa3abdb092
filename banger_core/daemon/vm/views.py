"""What the VM service shows and takes: the create request and the views built from a VM record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, ConfigDict

from banger_core.api.validation import STRICT, parse_body
from banger_core.common.config import parse_size
from banger_core.daemon.state.models import Vm
from banger_hookspecs import VmInfo


def _requested_size(value: object) -> int | None:
    """A create's ``disk_size``: bytes (an integer) or a size string, checked before anything is created."""
    return None if value is None else parse_size(value)


@dataclass(frozen=True)
class CreateRequest:
    """What a client asks for; None means "use the default" (config, then host heuristics)."""

    name: str | None = None
    image: str | None = None
    kernel: str | None = None
    backend: str | None = None
    network: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    disk_size: Annotated[int | str | None, BeforeValidator(_requested_size)] = None
    start: bool = True
    remove_on_exit: bool = False
    __pydantic_config__: ClassVar[ConfigDict] = STRICT
    host_access: bool = False

    @classmethod
    def from_json(cls, raw: bytes) -> CreateRequest:
        """A request body, strictly typed (see validation); ``disk_size`` comes back in bytes."""
        return parse_body(cls, raw)


def vm_dict(vm: Vm, handles: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": vm.id,
        "name": vm.name,
        "state": vm.state,
        "image": vm.image,
        "kernel": vm.kernel,
        "backend": vm.backend,
        "network": vm.network,
        "vcpus": vm.vcpus,
        "memory_mib": vm.memory_mib,
        "disk_size": vm.disk_size,
        "guest_ip": vm.guest_ip,
        "mac": vm.mac,
        "created_at": vm.created_at.isoformat(),
        "started_at": vm.started_at.isoformat() if vm.started_at else None,
        "last_error": vm.last_error,
        "remove_on_exit": vm.remove_on_exit,
        "host_access": vm.host_access,
        "spec_sources": vm.spec_sources,
        "pid": None,
        "ssh": None,
        "address": None,
    }
    if handles and vm.state in ("starting", "running", "stopping"):
        data["pid"] = handles.get("vmm", {}).get("pid")
        net = handles.get("net")
        if net:
            data["ssh"] = {"host": net["ssh_host"], "port": net["ssh_port"]}
            # Where the guest is reachable: its own IP on a bridge, the forwarded port with usernet.
            data["address"] = net.get("dns_address") or f"{net['ssh_host']}:{net['ssh_port']}"
    return data


def info(vm: Vm) -> VmInfo:
    return VmInfo(
        id=vm.id,
        name=vm.name,
        state=vm.state,
        image=vm.image,
        kernel=vm.kernel,
        backend=vm.backend,
        network=vm.network,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        guest_ip=vm.guest_ip,
    )
