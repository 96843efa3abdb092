"""One typed accessor per hook: the hook names exist, each accessor returns its contract type, pluggy's order."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest

from banger_core.common.plugins import (
    ARTIFACT_PUBLISHERS,
    CONFIG_OPTIONS,
    DNS_ROUTERS,
    DOCTOR_CHECKS,
    IMAGE_SOURCES,
    KERNEL_PROVIDERS,
    NETWORK_BACKENDS,
    VM_EVENTS,
    VMM_BACKENDS,
    WORKSPACE_SYNCERS,
    PluginManager,
    ProviderHook,
    Providers,
    get_plugin_manager,
)
from banger_core.daemon.runtime import Runtime
from banger_core.testing import FakeSite
from banger_hookspecs import (
    ArtifactPublisher,
    ConfigOption,
    DnsRouter,
    DoctorCheck,
    ImageSource,
    KernelProvider,
    NetworkBackend,
    VmInfo,
    VmmBackend,
    WorkspaceSyncer,
    specs,
)

#: One registration of every provider hook; each factory returns a marker naming its kind.
EVERY_KIND = """
from banger_hookspecs import (
    hookimpl, ArtifactPublisher, CheckResult, ConfigOption, DnsRouter, DoctorCheck, ImageSource, KernelProvider,
    NetworkBackend, VmmBackend, WorkspaceSyncer,
)

def _driver(kind):
    return lambda ctx: ("driver", kind)

@hookimpl
def banger_image_sources():
    return [ImageSource("acme-images", "x", _driver("image source"))]

@hookimpl
def banger_kernel_providers():
    return [KernelProvider("acme-kernels", "x", _driver("kernel provider"))]

@hookimpl
def banger_artifact_publishers():
    return [ArtifactPublisher("acme-publish", "x", _driver("artifact publisher"))]

@hookimpl
def banger_vmm_backends():
    return [VmmBackend("acme-vmm", "x", _driver("VMM backend"))]

@hookimpl
def banger_network_backends():
    return [NetworkBackend("acme-net", "x", _driver("network backend"))]

@hookimpl
def banger_dns_routers():
    return [DnsRouter("acme-dns", "x", _driver("DNS router"))]

@hookimpl
def banger_workspace_syncers():
    return [WorkspaceSyncer("acme-sync", "x", _driver("workspace syncer"))]

@hookimpl
def banger_doctor_checks():
    return [DoctorCheck("acme-check", lambda ctx: [CheckResult("acme", "ok", "fine")])]

@hookimpl
def banger_config_options():
    return [ConfigOption("acme_token", "str")]
"""

ACCESSORS: list[tuple[Callable[[PluginManager], Providers[object]], ProviderHook[object], type, str]] = [
    (PluginManager.image_sources, IMAGE_SOURCES, ImageSource, "acme-images"),
    (PluginManager.kernel_providers, KERNEL_PROVIDERS, KernelProvider, "acme-kernels"),
    (PluginManager.artifact_publishers, ARTIFACT_PUBLISHERS, ArtifactPublisher, "acme-publish"),
    (PluginManager.vmm_backends, VMM_BACKENDS, VmmBackend, "acme-vmm"),
    (PluginManager.network_backends, NETWORK_BACKENDS, NetworkBackend, "acme-net"),
    (PluginManager.dns_routers, DNS_ROUTERS, DnsRouter, "acme-dns"),
    (PluginManager.workspace_syncers, WORKSPACE_SYNCERS, WorkspaceSyncer, "acme-sync"),
    (PluginManager.doctor_checks, DOCTOR_CHECKS, DoctorCheck, "acme-check"),
    (PluginManager.config_options, CONFIG_OPTIONS, ConfigOption, "acme_token"),
]

VM = VmInfo("0" * 16, "happy-otter", "running", "img", "k", "qemu", "usernet", 1, 512, None)


def test_every_provider_hook_of_the_specs_has_an_accessor() -> None:
    provider_hooks = {name for name in dir(specs) if name.startswith("banger_") and not name.startswith("banger_vm_")}
    assert {hook.name for _, hook, _, _ in ACCESSORS} == provider_hooks - {"banger_cli_commands"}
    assert {name for name in dir(specs) if name.startswith("banger_vm_")} == VM_EVENTS


@pytest.mark.parametrize(("accessor", "hook", "registration", "name"), ACCESSORS, ids=lambda v: getattr(v, "name", ""))
def test_each_accessor_returns_its_contract_type(
    banger_site: FakeSite,
    banger_env: dict[str, str],
    accessor: Callable[[PluginManager], Providers[object]],
    hook: ProviderHook[object],
    registration: type,
    name: str,
) -> None:
    banger_site.add_plugin("acme", "acme-banger", source=EVERY_KIND)
    pm = get_plugin_manager(banger_env)

    providers = accessor(pm)

    assert providers.hook is hook and hook.registration is registration
    assert providers is pm.providers(hook)  # cached: one table per hook
    assert providers.require(name).plugin.name == "acme"
    assert providers  # the core's own registrations are there too for some kinds
    assert all(type(p.value) is registration for p in providers.values())


@pytest.mark.parametrize(
    ("accessor", "name", "kind"),
    [
        (Runtime.image_source, "acme-images", "image source"),
        (Runtime.kernel_provider, "acme-kernels", "kernel provider"),
        (Runtime.artifact_publisher, "acme-publish", "artifact publisher"),
        (Runtime.vmm, "acme-vmm", "VMM backend"),
        (Runtime.network, "acme-net", "network backend"),
        (Runtime.dns_router, "acme-dns", "DNS router"),
        (Runtime.workspace_syncer, "acme-sync", "workspace syncer"),
    ],
)
def test_each_runtime_accessor_builds_the_driver_of_its_hook_once(
    banger_site: FakeSite, banger_env: dict[str, str], accessor: Callable[[Runtime, str], object], name: str, kind: str
) -> None:
    banger_site.add_plugin("acme", "acme-banger", source=EVERY_KIND)
    rt = Runtime(banger_env)

    driver = accessor(rt, name)

    assert driver == ("driver", kind)
    assert accessor(rt, name) is driver
    with pytest.raises(Exception, match=rf"^unknown {kind} 'nope' \(known: "):
        accessor(rt, "nope")


def test_a_hook_name_that_is_not_in_the_specs_is_refused_at_runtime() -> None:
    with pytest.raises(ValueError, match=r"^'banger_image_source' is not a hook of banger_hookspecs.specs$"):
        ProviderHook("banger_image_source", "image source", ImageSource)
    with pytest.raises(ValueError, match=r"^'banger_vm_create' is not a lifecycle hook: use one of banger_vm_created"):
        get_plugin_manager({}, load_entry_points=False).call_event("banger_vm_create", VM)  # type: ignore[arg-type]


def test_a_registration_of_the_wrong_type_marks_the_plugin_failed(
    banger_site: FakeSite, banger_env: dict[str, str]
) -> None:
    banger_site.add_plugin(
        "confused",
        "confused-banger",
        source="""
from banger_hookspecs import hookimpl, ImageSource
@hookimpl
def banger_vmm_backends():
    return [ImageSource(name="oops", description="an image source in the wrong hook", factory=lambda ctx: None)]
""",
    )
    pm = get_plugin_manager(banger_env)

    assert "oops" not in pm.vmm_backends()
    record = pm.records["confused"]
    assert record.status == "failed"
    assert record.error == "banger_vmm_backends returned a ImageSource, not a VmmBackend"


ORDERED = """
from banger_hookspecs import hookimpl, DnsRouter

CALLS = []

@hookimpl
def banger_vm_created(vm):
    CALLS.append("{name}")

@hookimpl
def banger_dns_routers():
    return [DnsRouter("{name}", "x", lambda ctx: None)]
"""


def test_banger_walks_implementations_in_pluggys_call_order_last_registered_first(
    banger_site: FakeSite, banger_env: dict[str, str]
) -> None:
    modules = [
        importlib.import_module(banger_site.add_plugin(name, f"{name}-banger", source=ORDERED.format(name=name)))
        for name in ("first", "second")
    ]
    calls: list[str] = []
    for module in modules:
        module.CALLS = calls  # one log shared by both plugins shows who ran first
    pm = get_plugin_manager(banger_env, load_entry_points=False, extra=[("first", modules[0]), ("second", modules[1])])

    pm.pm.hook.banger_vm_created(vm=VM)  # pluggy's own call
    assert calls == ["second", "first"]

    calls.clear()
    assert pm.call_event("banger_vm_created", VM) == []
    assert calls == ["second", "first"]
    assert list(pm.dns_routers()) == ["second", "first", "manual"]
