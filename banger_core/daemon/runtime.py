"""The daemon's wiring: config, plugins, provider drivers, database, layout, ssh keys."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from banger_core.common.config import Config, load_config
from banger_core.common.context import make_context
from banger_core.common.errors import Unavailable
from banger_core.common.plugins import PluginManager, get_plugin_manager
from banger_core.common.ssh import SshKeys
from banger_core.daemon.layout import Layout
from banger_core.daemon.state.db import Database
from banger_core.host.hostops import host_ops_for_current_user
from banger_hookspecs import PluginContext

log = logging.getLogger("banger.runtime")


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
        self.ctx: PluginContext = make_context(
            self.config, host_ops_for_current_user(self.config), env=self.env, logger=logging.getLogger("banger")
        )
        self.layout = Layout(self.ctx.state_dir, self.ctx.runtime_dir)
        self.keys = SshKeys(self.layout.ssh, self.config.get("ssh_key_path"))
        self._drivers: dict[tuple[str, str], Any] = {}
        self._drivers_lock = threading.Lock()
        self.db: Database | None = None

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

    def driver(self, hook: str, name: str, kind: str) -> Any:
        """The (cached) driver of provider ``name`` registered through ``hook``."""
        key = (hook, name)
        with self._drivers_lock:
            if key not in self._drivers:
                provided = self.pm.provider(hook, name, kind=kind)
                try:
                    self._drivers[key] = provided.value.factory(self.ctx)
                except Exception as exc:
                    # A plugin's own exception carries a sentence (e.g. a bad config key and
                    # its fix); a builtin one (KeyError 'x') needs its type to make sense.
                    why = f"{type(exc).__name__}: {exc}" if type(exc).__module__ == "builtins" else str(exc)
                    raise Unavailable(f"{kind} {name!r} ({provided.plugin.dist}) cannot be used: {why}") from exc
            return self._drivers[key]

    def vmm(self, name: str) -> Any:
        return self.driver("banger_vmm_backends", name, "VMM backend")

    def network(self, name: str) -> Any:
        return self.driver("banger_network_backends", name, "network backend")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
