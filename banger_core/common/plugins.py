"""The plugin manager: loads entry-point group ``banger`` and selects providers by name.

Registration order:

1. the hook specifications (``banger_hookspecs.specs``);
2. the core's essential plugin (``banger_core.common.essential``), always;
3. every entry point in group ``banger`` — builtins and third-party plugins
   alike — sorted by entry-point name, unless ``BANGER_NO_PLUGINS=1`` or named
   in ``BANGER_DISABLE_PLUGINS``.

pluggy calls implementations in the reverse order (the last registered first),
and banger walks them in that same order: providers are listed, lifecycle
observers called and plugin commands added last-registered first. Providers
are selected by name, never by this order.

Every hook has one typed accessor (``pm.vmm_backends()``, ``pm.call_event(
"banger_vm_started", vm)``, ...), so a misspelt hook is a mypy error rather
than a user's traceback.

A plugin that fails to import, declares a hook banger does not know, or has a
hook implementation whose arguments do not match the spec is reported and
listed as ``failed``; it never takes the CLI down. There is no module-global
manager: call :func:`get_plugin_manager`.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Generic, Literal, TypedDict, TypeVar, cast, get_args

import pluggy
from pluggy import HookCaller, HookImpl

from banger_core.common.errors import PluginError
from banger_hookspecs import (
    ENTRY_POINT_GROUP,
    PROJECT_NAME,
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

if TYPE_CHECKING:
    import click

log = logging.getLogger("banger.plugins")

#: Distributions shipped with banger; everything else is "external".
BUILTIN_DISTRIBUTIONS = frozenset(
    {
        "banger",
        "banger-catalog",
        "banger-debootstrap",
        "banger-debian",
        "banger-qemu",
        "banger-firecracker",
        "banger-bridge",
        "banger-usernet",
        "banger-resolved",
        "banger-git",
        "banger-oci",
        "banger-register",
        "banger-updater",
    }
)
ESSENTIAL_PLUGIN = "core"

Status = Literal["active", "blocked", "failed"]
Source = Literal["builtin", "external"]


class PluginRow(TypedDict):
    """A :class:`PluginRecord` as ``banger plugins list --json`` prints it."""

    name: str
    version: str | None
    source: Source
    status: Status
    hooks: list[str]
    dist: str | None
    error: str | None


@dataclass
class PluginRecord:
    """One row of ``banger plugins list``."""

    name: str
    dist: str | None
    version: str | None
    source: Source
    status: Status
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None

    def load_error_line(self) -> str:
        dist = f"{self.dist or 'unknown'} {self.version or '?'}"
        return f"Error while loading banger plugin {self.name} ({dist}): {self.error}"

    def as_dict(self) -> PluginRow:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "status": self.status,
            "hooks": self.hooks,
            "dist": self.dist,
            "error": self.error,
        }


P = TypeVar("P")
#: Covariant: a ``ProviderHook[VmmBackend]`` is a ``ProviderHook[Registration[VmmDriver]]``.
R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True)
class Provided(Generic[R_co]):
    """A provider registration together with the plugin that registered it."""

    value: R_co
    plugin: PluginRecord


@dataclass(frozen=True)
class ProviderHook(Generic[R_co]):
    """A provider hook of the contract: its pluggy name, the registration type, what a user calls one.

    The constants below are the only way to name a provider hook, so a misspelt
    hook is a mypy error (and a name missing from the specs a ``ValueError`` at import).

    Attributes:
        name: the hook in :mod:`banger_hookspecs.specs` (``banger_image_sources``).
        kind: what one registration is called in messages (``image source``).
        registration: the value object every implementation returns.
        key: the registration attribute that names it (``key`` for config options).
    """

    name: str
    kind: str
    registration: type[R_co]
    key: Literal["name", "key"] = "name"

    def __post_init__(self) -> None:
        if not self.name.startswith("banger_") or not callable(getattr(specs, self.name, None)):
            raise ValueError(f"{self.name!r} is not a hook of banger_hookspecs.specs")


IMAGE_SOURCES = ProviderHook("banger_image_sources", "image source", ImageSource)
KERNEL_PROVIDERS = ProviderHook("banger_kernel_providers", "kernel provider", KernelProvider)
ARTIFACT_PUBLISHERS = ProviderHook("banger_artifact_publishers", "artifact publisher", ArtifactPublisher)
VMM_BACKENDS = ProviderHook("banger_vmm_backends", "VMM backend", VmmBackend)
NETWORK_BACKENDS = ProviderHook("banger_network_backends", "network backend", NetworkBackend)
DNS_ROUTERS = ProviderHook("banger_dns_routers", "DNS router", DnsRouter)
WORKSPACE_SYNCERS = ProviderHook("banger_workspace_syncers", "workspace syncer", WorkspaceSyncer)
DOCTOR_CHECKS = ProviderHook("banger_doctor_checks", "doctor check", DoctorCheck)
CONFIG_OPTIONS = ProviderHook("banger_config_options", "config option", ConfigOption, key="key")

#: The lifecycle hooks; each takes one ``vm: VmInfo``.
VmEvent = Literal["banger_vm_created", "banger_vm_started", "banger_vm_stopped", "banger_vm_deleted"]
VM_EVENTS: frozenset[str] = frozenset(get_args(VmEvent))


class Providers(Mapping[str, Provided[R_co]]):
    """The registrations of one provider hook by name (read-only)."""

    def __init__(self, hook: ProviderHook[R_co], found: Mapping[str, Provided[R_co]]) -> None:
        self.hook = hook
        self._found = dict(found)

    def __getitem__(self, name: str) -> Provided[R_co]:
        return self._found[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._found)

    def __len__(self) -> int:
        return len(self._found)

    def require(self, name: str) -> Provided[R_co]:
        """The registration named ``name``; an unknown name is an error listing the known ones."""
        if name not in self._found:
            known = ", ".join(sorted(self._found)) or "none installed"
            raise PluginError(f"unknown {self.hook.kind} {name!r} (known: {known})")
        return self._found[name]


def _parse_disabled(env: Mapping[str, str]) -> set[str]:
    raw = env.get("BANGER_DISABLE_PLUGINS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class PluginManager:
    """banger's wrapper around :class:`pluggy.PluginManager`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(specs)
        self.records: dict[str, PluginRecord] = {}
        self._provider_cache: dict[str, Providers[object]] = {}

    # -- loading -----------------------------------------------------------

    def register_plugin(
        self, plugin: object, name: str, *, dist: str | None, version: str | None, source: Source
    ) -> PluginRecord:
        """Register an already-imported plugin object and validate its hooks."""
        record = PluginRecord(name=name, dist=dist, version=version, source=source, status="active")
        self.records[name] = record
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            # pluggy's message spans lines; the last one says what is wrong.
            lines = str(exc).strip().splitlines()
            hook = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("hookimpl definition:")), "")
            self._fail(record, f"bad hook {hook}: {lines[-1]}", traceback.format_exc())
            return record
        except Exception as exc:  # ValueError for a duplicate name, ...
            self._fail(record, _one_line(exc), traceback.format_exc())
            return record
        unknown = [c.name for c in self.pm.get_hookcallers(plugin) or [] if c.spec is None]
        if unknown:
            self.pm.unregister(plugin)
            hooks = ", ".join(sorted(unknown))
            self._fail(record, f"declares unknown hook {hooks} (is it built for another banger version?)", None)
            return record
        record.hooks = sorted(c.name.removeprefix("banger_") for c in self.pm.get_hookcallers(plugin) or [])
        return record

    def _fail(self, record: PluginRecord, error: str, tb: str | None) -> None:
        record.status = "failed"
        record.error = error
        record.traceback = tb
        record.hooks = []
        log.debug("plugin %s failed: %s", record.name, error)

    def load_entry_points(self, env: Mapping[str, str] = os.environ) -> None:
        """Load every entry point of group ``banger`` (honouring the env switches)."""
        disabled = _parse_disabled(env)
        no_plugins = _truthy(env.get("BANGER_NO_PLUGINS"))
        seen: set[tuple[str, str]] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist_name = ep.dist.metadata["Name"] if ep.dist is not None else None
            dist_version = ep.dist.version if ep.dist is not None else None
            if (ep.name, ep.value) in seen:
                continue  # the same distribution found twice on sys.path
            seen.add((ep.name, ep.value))
            source: Source = "builtin" if _normalize(dist_name) in BUILTIN_DISTRIBUTIONS else "external"
            if ep.name in self.records:
                other = self.records[ep.name]
                record = PluginRecord(ep.name, dist_name, dist_version, source, "failed")
                record.error = f"plugin name {ep.name!r} is already used by {other.dist} {other.version}"
                self.records[f"{ep.name}@{dist_name}"] = record
                continue
            if no_plugins or ep.name in disabled:
                why = "BANGER_NO_PLUGINS=1" if no_plugins else "BANGER_DISABLE_PLUGINS"
                self.records[ep.name] = PluginRecord(
                    ep.name, dist_name, dist_version, source, "blocked", error=f"blocked by {why}"
                )
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                record = PluginRecord(ep.name, dist_name, dist_version, source, "active")
                self.records[ep.name] = record
                self._fail(record, _one_line(exc), traceback.format_exc())
                continue
            self.register_plugin(plugin, ep.name, dist=dist_name, version=dist_version, source=source)

    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.status == "failed"]

    def plugin_records(self) -> list[PluginRecord]:
        return sorted(self.records.values(), key=lambda r: (r.name != ESSENTIAL_PLUGIN, r.name))

    # -- providers ---------------------------------------------------------

    def providers(self, hook: ProviderHook[P]) -> Providers[P]:
        """All registrations of a provider hook by name; a name used twice is an error.

        A plugin whose registration hook raises, or returns something other than
        the hook's registration type, is marked failed and skipped.
        """
        cached = self._provider_cache.get(hook.name)
        if cached is not None:
            return cast("Providers[P]", cached)  # stored under this hook's name by the code below
        found: dict[str, Provided[P]] = {}
        for impl in self._hookimpls(hook.name):
            record = self.records.get(impl.plugin_name)
            if record is None or record.status != "active":
                continue
            try:
                items = _returned(impl)
            except Exception as exc:
                self._fail(record, f"{hook.name} raised: {_one_line(exc)}", traceback.format_exc())
                continue
            registrations = [item for item in items if isinstance(item, hook.registration)]
            if len(registrations) != len(items):
                wrong = next(type(item).__name__ for item in items if not isinstance(item, hook.registration))
                self._fail(record, f"{hook.name} returned a {wrong}, not a {hook.registration.__name__}", None)
                continue
            for item in registrations:
                name = str(getattr(item, hook.key))
                if name in found:
                    other = found[name].plugin
                    raise PluginError(
                        f"{hook.kind} {name!r} is registered by both {_describe(other)} and {_describe(record)}: "
                        f"uninstall one, or block one with BANGER_DISABLE_PLUGINS={record.name}"
                    )
                found[name] = Provided(item, record)
        providers = Providers(hook, found)
        self._provider_cache[hook.name] = providers
        return providers

    def image_sources(self) -> Providers[ImageSource]:
        return self.providers(IMAGE_SOURCES)

    def kernel_providers(self) -> Providers[KernelProvider]:
        return self.providers(KERNEL_PROVIDERS)

    def artifact_publishers(self) -> Providers[ArtifactPublisher]:
        return self.providers(ARTIFACT_PUBLISHERS)

    def vmm_backends(self) -> Providers[VmmBackend]:
        return self.providers(VMM_BACKENDS)

    def network_backends(self) -> Providers[NetworkBackend]:
        return self.providers(NETWORK_BACKENDS)

    def dns_routers(self) -> Providers[DnsRouter]:
        return self.providers(DNS_ROUTERS)

    def workspace_syncers(self) -> Providers[WorkspaceSyncer]:
        return self.providers(WORKSPACE_SYNCERS)

    def doctor_checks(self) -> Providers[DoctorCheck]:
        return self.providers(DOCTOR_CHECKS)

    def config_options(self) -> Providers[ConfigOption]:
        return self.providers(CONFIG_OPTIONS)

    def cli_commands(self) -> list[tuple[str, list[click.Command] | Exception]]:
        """Each plugin's ``banger_cli_commands``, or the exception it raised (the CLI warns and goes on)."""
        import click  # only the CLI asks; the daemon never imports click for this

        out: list[tuple[str, list[click.Command] | Exception]] = []
        for impl in self._hookimpls("banger_cli_commands"):
            try:
                items = _returned(impl)
                commands = [item for item in items if isinstance(item, click.Command)]
                if len(commands) != len(items):
                    raise TypeError("banger_cli_commands returned something that is not a click command")
            except Exception as exc:
                out.append((impl.plugin_name, exc))
                continue
            out.append((impl.plugin_name, commands))
        return out

    def call_event(self, hook: VmEvent, vm: VmInfo) -> list[str]:
        """Call a lifecycle hook; a failing observer is logged, never fatal. Returns errors."""
        if hook not in VM_EVENTS:
            raise ValueError(f"{hook!r} is not a lifecycle hook: use one of {', '.join(sorted(VM_EVENTS))}")
        errors: list[str] = []
        for impl in self._hookimpls(hook):
            try:
                impl.function(vm=vm)
            except Exception as exc:
                msg = f"plugin {impl.plugin_name}: {hook} raised: {_one_line(exc)}"
                log.warning(msg, exc_info=True)
                errors.append(msg)
        return errors

    def _hookimpls(self, hook_name: str) -> list[HookImpl]:
        """The implementations of ``hook_name`` in pluggy's call order: the last registered first."""
        caller: HookCaller = getattr(self.pm.hook, hook_name)
        return list(reversed(caller.get_hookimpls()))


def _returned(impl: HookImpl) -> list[object]:
    """What a registration hook implementation returned, as a list (None counts as nothing)."""
    result = impl.function()
    if result is None:
        return []
    if not isinstance(result, Iterable):
        raise TypeError(f"returned a {type(result).__name__}, not an iterable of registrations")
    return list(result)


def _normalize(dist: str | None) -> str:
    return (dist or "").lower().replace("_", "-").replace(".", "-")


def _describe(record: PluginRecord) -> str:
    return f"plugin {record.name} ({record.dist or 'unknown'} {record.version or '?'})"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def get_plugin_manager(
    env: Mapping[str, str] = os.environ,
    *,
    load_entry_points: bool = True,
    extra: Iterable[tuple[str, ModuleType | object]] = (),
) -> PluginManager:
    """Build a fresh manager: specs, the essential core plugin, then entry points.

    Args:
        env: environment to read ``BANGER_NO_PLUGINS``/``BANGER_DISABLE_PLUGINS`` from.
        load_entry_points: False loads only the essential plugin (and ``extra``).
        extra: ``(name, plugin)`` pairs registered as external plugins (tests).
    """
    from banger_core.common import essential

    manager = PluginManager()
    manager.register_plugin(
        essential, ESSENTIAL_PLUGIN, dist="banger", version=_dist_version("banger"), source="builtin"
    )
    if load_entry_points:
        manager.load_entry_points(env)
    for name, plugin in extra:
        manager.register_plugin(plugin, name, dist=None, version=None, source="external")
    return manager


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
