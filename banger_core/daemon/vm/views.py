"""What the VM service shows: the API views built from a VM record, and the record as plugins see it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from banger_core.api.models import SshEndpoint, VmDetail, VmView
from banger_core.api.state import ACTIVE
from banger_core.daemon.state.models import Vm
from banger_core.daemon.vm.ports import mappings
from banger_hookspecs import VmInfo


def vm_view(vm: Vm, handles: dict[str, Any] | None = None) -> VmView:
    """The API's view of ``vm``; the live fields (pid, ssh, address) come from its handles while it runs."""
    pid: int | None = None
    ssh: SshEndpoint | None = None
    address: str | None = None
    booted = None
    if handles and vm.state in ACTIVE:
        pid = handles.get("vmm", {}).get("pid")
        booted = handles.get("booted")
        net = handles.get("net")
        if net:
            ssh = SshEndpoint(host=net["ssh_host"], port=net["ssh_port"])
            # Where the guest is reachable: its own IP on a bridge, the forwarded port with usernet.
            address = net.get("dns_address") or f"{net['ssh_host']}:{net['ssh_port']}"
    return VmView(
        id=vm.id,
        name=vm.name,
        state=vm.state,
        image=vm.image,
        kernel=vm.kernel,
        backend=vm.backend,
        network=vm.network,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        disk_size=vm.disk_size,
        guest_ip=vm.guest_ip,
        mac=vm.mac,
        created_at=vm.created_at,
        started_at=vm.started_at,
        last_error=vm.last_error,
        remove_on_exit=vm.remove_on_exit,
        host_access=vm.host_access,
        ports=mappings(vm.ports),
        spec_sources=vm.spec_sources,
        pid=pid,
        ssh=ssh,
        address=address,
        booted=booted,
    )


def vm_detail(vm: Vm, handles: dict[str, Any] | None, serial_log: Path) -> VmDetail:
    """:func:`vm_view` plus the path of the VM's console log."""
    return VmDetail(**dict(vm_view(vm, handles)), serial_log=str(serial_log))


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
