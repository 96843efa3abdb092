"""Type-checked by mypy (listed in pyproject's [tool.mypy] files), never run by pytest.

Every hook has a typed accessor, so misuse is a type error. Each ``# type: ignore[code]``
below is an expected error: with ``strict`` (warn_unused_ignores), mypy fails the build
as soon as one of these lines stops being an error.
"""

from __future__ import annotations

from typing import assert_type

from banger_core.common.plugins import PluginManager, Providers
from banger_core.daemon.runtime import Runtime
from banger_hookspecs import (
    DnsRouterDriver,
    ImageSource,
    ImageSourceDriver,
    KernelProviderDriver,
    NetworkDriver,
    VmInfo,
    VmmBackend,
    VmmDriver,
    WorkspaceSyncerDriver,
)


def misspelt(pm: PluginManager, rt: Runtime, vm: VmInfo) -> None:
    pm.vmm_backend()  # type: ignore[attr-defined]
    pm.providers("banger_vmm_backends")  # type: ignore[arg-type]
    pm.call_event("banger_vm_create", vm)  # type: ignore[arg-type]
    rt.vmm("qemu").lauch()  # type: ignore[attr-defined]
    rt.network("bridge").teardown_host()  # type: ignore[attr-defined]
    rt.dns_router("manual").unroute("banger0", "172.16.0.1", "vm")  # type: ignore[attr-defined]
    print(pm.vmm_backends().require("qemu").value.nic_kind)  # type: ignore[attr-defined]


def typed(pm: PluginManager, rt: Runtime) -> None:
    assert_type(pm.vmm_backends(), Providers[VmmBackend])
    assert_type(pm.image_sources().require("catalog").value, ImageSource)
    assert_type(rt.vmm("qemu"), VmmDriver)
    assert_type(rt.network("bridge"), NetworkDriver)
    assert_type(rt.dns_router("manual"), DnsRouterDriver)
    assert_type(rt.image_source("catalog"), ImageSourceDriver)
    assert_type(rt.kernel_provider("catalog"), KernelProviderDriver)
    assert_type(rt.workspace_syncer("git"), WorkspaceSyncerDriver)
