"""The daemon's wiring: config, plugins, provider drivers, database, layout, ssh keys."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar, cast

from banger_core.common.config import Config, load_config
from banger_core.common.context import make_context
from banger_core.common.errors import Unavailable
from banger_core.common.plugins import (
    ARTIFACT_PUBLISHERS,
    DNS_ROUTERS,
    IMAGE_SOURCES,
    KERNEL_PROVIDERS,
    NETWORK_BACKENDS,
    VMM_BACKENDS,
    WORKSPACE_SYNCERS,
    PluginManager,
    ProviderHook,
    get_plugin_manager,
)
from banger_core.common.ssh import SshKeys
from banger_core.daemon import documents
from banger_core.daemon.busy import Busy
from banger_core.daemon.layout import Layout
from banger_core.daemon.state.db import Database
from banger_core.host.hostops import host_ops_for_current_user
from banger_hookspecs import (
    ArtifactPublisherDriver,
    DnsRouterDriver,
    FetchedDocument,
    ImageSourceDriver,
    KernelProviderDriver,
    NetworkDriver,
    PluginContext,
    Progress,
    VmmDriver,
    WorkspaceSyncerDriver,
)

log = logging.getLogger("banger.runtime")

D = TypeVar("D")
D_co = TypeVar("D_co", covariant=True)


class Registration(Protocol[D_co]):
    """A provider registration with a driver factory (ImageSource, VmmBackend, ...)."""

    @property
    def factory(self) -> Callable[[PluginContext], D_co]: ...


class Runtime:
    """Everything the daemon's services share; built once at daemon start."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        pm: PluginManager | None = None,
        config: Config | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.pm = pm or get_plugin_manager(self.env)
        self.config = config or load_config(self.pm, self.env)
        host_ops = host_ops_for_current_user(self.config, self.env)
        self.ctx: PluginContext = make_context(self.config, host_ops, env=self.env, logger=logging.getLogger("banger"))
        self.ctx = dataclasses.replace(self.ctx, fetch_document=self.fetch_document)
        self.layout = Layout(self.ctx.state_dir, self.ctx.runtime_dir)
        self.keys = SshKeys(self.layout.ssh, self.config.get("ssh_key_path"))
        self._drivers: dict[tuple[str, str], object] = {}
        self._drivers_lock = threading.Lock()
        #: Network backends whose host side is set up (see :meth:`ready_network`), and their locks.
        self._networks_ready: set[str] = set()
        self._network_locks: dict[str, threading.Lock] = {}
        #: Called with ``(name, driver)`` after a backend's host side was set up (the daemon starts DNS there).
        self.on_network_ready: list[Callable[[str, NetworkDriver], None]] = []
        self.db: Database | None = None
        #: VM creates/deletes and pulls in progress (``GET /v1/daemon``'s ``in_progress``).
        self.busy = Busy()

    def open(self) -> None:
        """Create directories and open the database (refuses a broken one)."""
        for directory in (self.layout.state_dir, self.layout.images, self.layout.kernels, self.layout.vms):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = Database(self.layout.db)
        self.keys.ensure()

    @property
    def database(self) -> Database:
        if self.db is None:
            raise RuntimeError("runtime not opened")
        return self.db

    def _driver(self, hook: ProviderHook[Registration[D]], name: str) -> D:
        """The (cached) driver of provider ``name`` registered through ``hook``."""
        key = (hook.name, name)
        with self._drivers_lock:
            if key not in self._drivers:
                provided = self.pm.providers(hook).require(name)
                try:
                    self._drivers[key] = provided.value.factory(self.ctx)
                except Exception as exc:
                    # A plugin's own exception carries a sentence (e.g. a bad config key and
                    # its fix); a builtin one (KeyError 'x') needs its type to make sense.
                    why = f"{type(exc).__name__}: {exc}" if type(exc).__module__ == "builtins" else str(exc)
                    raise Unavailable(f"{hook.kind} {name!r} ({provided.plugin.dist}) cannot be used: {why}") from exc
            return cast("D", self._drivers[key])  # stored under this hook by the factory above

    def image_source(self, name: str) -> ImageSourceDriver:
        return self._driver(IMAGE_SOURCES, name)

    def kernel_provider(self, name: str) -> KernelProviderDriver:
        return self._driver(KERNEL_PROVIDERS, name)

    def artifact_publisher(self, name: str) -> ArtifactPublisherDriver:
        return self._driver(ARTIFACT_PUBLISHERS, name)

    def fetch_document(self, reference: str, *, artifact_type: str, media_type: str, max_size: int) -> FetchedDocument:
        """Plugins' ``ctx.fetch_document``: through the artifact publisher claiming ``reference``."""
        return documents.fetch_document(
            self, reference, artifact_type=artifact_type, media_type=media_type, max_size=max_size
        )

    def vmm(self, name: str) -> VmmDriver:
        return self._driver(VMM_BACKENDS, name)

    def network(self, name: str) -> NetworkDriver:
        return self._driver(NETWORK_BACKENDS, name)

    def ready_network(self, name: str, progress: Progress) -> NetworkDriver:
        """Backend ``name`` with its host side set up: the first VM that needs a backend sets it up.

        Setting up runs once per daemon (again after :meth:`forget_network`);
        concurrent callers wait for the first one. A failure is raised to the
        caller and the next caller tries again.
        """
        driver = self.network(name)
        with self._drivers_lock:
            lock = self._network_locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._networks_ready:
                driver.setup_host(progress)
                self._networks_ready.add(name)
                for listener in self.on_network_ready:
                    try:
                        listener(name, driver)
                    except Exception:  # DNS is a convenience: a VM must still get its network
                        log.exception("after setting up network backend %s", name)
        return driver

    def forget_network(self, name: str) -> None:
        """Set backend ``name`` up again on next use (its host side may have been changed behind our back)."""
        with self._drivers_lock:
            self._networks_ready.discard(name)

    def dns_router(self, name: str) -> DnsRouterDriver:
        return self._driver(DNS_ROUTERS, name)

    def workspace_syncer(self, name: str) -> WorkspaceSyncerDriver:
        return self._driver(WORKSPACE_SYNCERS, name)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
