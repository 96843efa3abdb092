"""The plugin manager: loads entry-point group ``banger`` and selects providers by name.

Registration order:

1. the hook specifications (``banger_hookspecs.specs``);
2. the core's essential plugin (``banger_core.common.essential``), always;
3. every entry point in group ``banger`` — builtins and third-party plugins
   alike — unless ``BANGER_NO_PLUGINS=1`` or named in ``BANGER_DISABLE_PLUGINS``.

A plugin that fails to import, declares a hook banger does not know, or has a
hook implementation whose arguments do not match the spec is reported and
listed as ``failed``; it never takes the CLI down. There is no module-global
manager: call :func:`get_plugin_manager`.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any, Generic, Literal, TypeVar

import pluggy

from banger_core.common.errors import PluginError
from banger_hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME, specs

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
    }
)
ESSENTIAL_PLUGIN = "core"

Status = Literal["active", "blocked", "failed"]
Source = Literal["builtin", "external"]


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

    def as_dict(self) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Provided(Generic[P]):
    """A provider registration together with the plugin that registered it."""

    value: P
    plugin: PluginRecord


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
        self._provider_cache: dict[str, dict[str, Provided[Any]]] = {}

    @property
    def hook(self) -> Any:
        return self.pm.hook

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

    def providers(self, hook_name: str) -> dict[str, Provided[Any]]:
        """All registrations of a provider hook by name; a name used twice is an error.

        A plugin whose registration hook raises is marked failed and skipped.
        """
        if hook_name in self._provider_cache:
            return self._provider_cache[hook_name]
        caller = getattr(self.pm.hook, hook_name)
        found: dict[str, Provided[Any]] = {}
        for impl in reversed(caller.get_hookimpls()):  # registration order
            record = self.records.get(impl.plugin_name)
            if record is None or record.status != "active":
                continue
            try:
                items = list(impl.function() or ())
            except Exception as exc:
                self._fail(record, f"{hook_name} raised: {_one_line(exc)}", traceback.format_exc())
                continue
            for item in items:
                name = item.key if hasattr(item, "key") else item.name
                if name in found:
                    other = found[name].plugin
                    kind = hook_name.removeprefix("banger_").replace("_", " ").rstrip("s")
                    raise PluginError(
                        f"{kind} {name!r} is registered by both {_describe(other)} and {_describe(record)}: "
                        f"uninstall one, or block one with BANGER_DISABLE_PLUGINS={record.name}"
                    )
                found[name] = Provided(item, record)
        self._provider_cache[hook_name] = found
        return found

    def provider(self, hook_name: str, name: str, *, kind: str) -> Provided[Any]:
        """The registration named ``name``; unknown names list the known ones."""
        found = self.providers(hook_name)
        if name not in found:
            known = ", ".join(sorted(found)) or "none installed"
            raise PluginError(f"unknown {kind} {name!r} (known: {known})")
        return found[name]

    def call_event(self, hook_name: str, **kwargs: Any) -> list[str]:
        """Call a lifecycle hook; a failing observer is logged, never fatal. Returns errors."""
        errors: list[str] = []
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            try:
                impl.function(**kwargs)
            except Exception as exc:
                msg = f"plugin {impl.plugin_name}: {hook_name} raised: {_one_line(exc)}"
                log.warning(msg, exc_info=True)
                errors.append(msg)
        return errors


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
