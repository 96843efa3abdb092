"""Hook specifications: the public contract between banger's core and its plugins.

Provider hooks are registrations: each returns an iterable of small
dataclasses with a validated ``name``. The core selects a provider by its
configured name, never by registration order, and a name registered by two
distributions is an error naming both. Registrations are cheap: a plugin
imports heavy modules only inside its ``factory``.

Every example below is a doctest; ``tests/test_hookspecs.py`` runs them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

from banger_hookspecs.types import (
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
)

if TYPE_CHECKING:
    import click

PROJECT_NAME = "banger"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def banger_image_sources() -> Iterable[ImageSource]:
    """Register image sources: ways to turn an image reference into a local rootfs.

    The core asks every source whose driver ``claims(ref)`` in priority order
    and falls back to the next one when a driver raises ``SourceUnavailable``.

    Returns:
        Image sources this plugin provides.

    Example:
        >>> from banger_hookspecs import hookimpl, ImageSource
        >>> @hookimpl
        ... def banger_image_sources():
        ...     return [ImageSource(name="nightly", description="nightly builds",
        ...                         factory=lambda ctx: NotImplemented)]
        >>> [s.name for s in banger_image_sources()]
        ['nightly']
    """
    raise NotImplementedError


@hookspec
def banger_kernel_providers() -> Iterable[KernelProvider]:
    """Register kernel providers: ways to get an ELF vmlinux plus banger's initramfs.

    Returns:
        Kernel providers this plugin provides.

    Example:
        >>> from banger_hookspecs import hookimpl, KernelProvider
        >>> @hookimpl
        ... def banger_kernel_providers():
        ...     return [KernelProvider(name="custom", description="my kernels",
        ...                            factory=lambda ctx: NotImplemented)]
        >>> banger_kernel_providers()[0].name
        'custom'
    """
    raise NotImplementedError


@hookspec
def banger_artifact_publishers() -> Iterable[ArtifactPublisher]:
    """Register artifact publishers: ways to publish an image or kernel bundle (``banger image push``).

    The core writes the bundle from its store and hands it to the publisher
    whose driver ``claims(target)``, asked in priority order (lower first).

    Returns:
        Artifact publishers this plugin provides.

    Example:
        >>> from banger_hookspecs import hookimpl, ArtifactPublisher
        >>> @hookimpl
        ... def banger_artifact_publishers():
        ...     return [ArtifactPublisher(name="s3", description="bundles in an S3 bucket",
        ...                               factory=lambda ctx: NotImplemented)]
        >>> banger_artifact_publishers()[0].name
        's3'
    """
    raise NotImplementedError


@hookspec
def banger_vmm_backends() -> Iterable[VmmBackend]:
    """Register VMM backends: ways to run a :class:`~banger_hookspecs.VmSpec` as a process.

    ``auto`` picks the usable backend whose ``availability().preference`` is highest.

    Returns:
        VMM backends this plugin provides.

    Example:
        >>> from banger_hookspecs import hookimpl, VmmBackend
        >>> @hookimpl
        ... def banger_vmm_backends():
        ...     return [VmmBackend(name="cloud-hypervisor", description="CH",
        ...                        factory=lambda ctx: NotImplemented)]
        >>> banger_vmm_backends()[0].name
        'cloud-hypervisor'
    """
    raise NotImplementedError


@hookspec
def banger_network_backends() -> Iterable[NetworkBackend]:
    """Register network backends: ways to give a VM a NIC, an IP and reachability.

    Returns:
        Network backends this plugin provides.

    Example:
        >>> from banger_hookspecs import hookimpl, NetworkBackend
        >>> @hookimpl
        ... def banger_network_backends():
        ...     return [NetworkBackend(name="macvtap", description="macvtap NICs",
        ...                            factory=lambda ctx: NotImplemented)]
        >>> banger_network_backends()[0].name
        'macvtap'
    """
    raise NotImplementedError


@hookspec
def banger_dns_routers() -> Iterable[DnsRouter]:
    """Register DNS routers: ways to make the host resolve ``<vm>.vm`` through banger.

    Returns:
        DNS routers this plugin provides.

    Example:
        >>> from banger_hookspecs import hookimpl, DnsRouter
        >>> @hookimpl
        ... def banger_dns_routers():
        ...     return [DnsRouter(name="dnsmasq", description="dnsmasq drop-in",
        ...                       factory=lambda ctx: NotImplemented)]
        >>> banger_dns_routers()[0].name
        'dnsmasq'
    """
    raise NotImplementedError


@hookspec
def banger_workspace_syncers() -> Iterable[WorkspaceSyncer]:
    """Register workspace syncers: ways to copy a workspace into a guest.

    Returns:
        Workspace syncers this plugin provides.

    Example:
        >>> from banger_hookspecs import hookimpl, WorkspaceSyncer
        >>> @hookimpl
        ... def banger_workspace_syncers():
        ...     return [WorkspaceSyncer(name="hg", description="Mercurial working copies",
        ...                             factory=lambda ctx: NotImplemented)]
        >>> banger_workspace_syncers()[0].name
        'hg'
    """
    raise NotImplementedError


@hookspec
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    """Register checks shown as rows by ``banger doctor``.

    Returns:
        Doctor checks; each ``run(ctx)`` yields :class:`~banger_hookspecs.CheckResult` rows.

    Example:
        >>> from banger_hookspecs import hookimpl, CheckResult, DoctorCheck
        >>> @hookimpl
        ... def banger_doctor_checks():
        ...     return [DoctorCheck(name="disk", run=lambda ctx: [
        ...         CheckResult(name="disk", status="ok", summary="plenty of space")])]
        >>> list(banger_doctor_checks()[0].run(None))[0].status
        'ok'
    """
    raise NotImplementedError


@hookspec
def banger_config_options() -> Iterable[ConfigOption]:
    """Declare the ``config.toml`` keys this plugin reads.

    Keys are top level; a key declared twice is an error naming both
    distributions. Unknown keys in the file are errors, so a plugin must
    declare every key it reads.

    Returns:
        Config options.

    Example:
        >>> from banger_hookspecs import hookimpl, ConfigOption
        >>> @hookimpl
        ... def banger_config_options():
        ...     return [ConfigOption(key="acme_token_file", type="path",
        ...                          help="where the acme token lives")]
        >>> banger_config_options()[0].key
        'acme_token_file'
    """
    raise NotImplementedError


@hookspec
def banger_cli_commands() -> Iterable[click.Command]:
    """Register extra top-level ``banger`` commands (click commands or groups).

    A command name that clashes with a core command is an error.

    Returns:
        click commands.

    Example:
        >>> import click
        >>> from banger_hookspecs import hookimpl
        >>> @hookimpl
        ... def banger_cli_commands():
        ...     @click.command(name="hello")
        ...     def hello() -> None:
        ...         click.echo("hi")
        ...     return [hello]
        >>> banger_cli_commands()[0].name
        'hello'
    """
    raise NotImplementedError


@hookspec
def banger_vm_created(vm: VmInfo) -> None:
    """Called after a VM record and its disks exist.

    Args:
        vm: the new VM.

    Example:
        >>> from banger_hookspecs import hookimpl
        >>> seen = []
        >>> @hookimpl
        ... def banger_vm_created(vm):
        ...     seen.append(vm.name)
    """


@hookspec
def banger_vm_started(vm: VmInfo) -> None:
    """Called once a VM is running and ssh-ready.

    Args:
        vm: the VM, with its guest IP.

    Example:
        >>> from banger_hookspecs import hookimpl
        >>> @hookimpl
        ... def banger_vm_started(vm):
        ...     print(f"{vm.name} is up at {vm.guest_ip}")
    """


@hookspec
def banger_vm_stopped(vm: VmInfo) -> None:
    """Called after a VM's process is gone (stop, crash found by reconcile).

    Args:
        vm: the VM.

    Example:
        >>> from banger_hookspecs import hookimpl
        >>> @hookimpl
        ... def banger_vm_stopped(vm):
        ...     print(f"{vm.name} stopped")
    """


@hookspec
def banger_vm_deleted(vm: VmInfo) -> None:
    """Called after a VM and its disks are deleted.

    Args:
        vm: the VM as it was.

    Example:
        >>> from banger_hookspecs import hookimpl
        >>> @hookimpl
        ... def banger_vm_deleted(vm):
        ...     print(f"{vm.name} deleted")
    """
