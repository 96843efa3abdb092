"""config.toml changes take effect, or fail loudly, while the daemon runs.

Before each request (but ``/v1/daemon*``, so status and shutdown always work)
the daemon compares the file's stamp with the one it loaded. When the file
changed it is validated again:

- invalid (bad TOML, unknown key, bad value): the request fails with that one
  line error; the daemon keeps what it runs with until the file is fixed;
- only :data:`LIVE_KEYS` changed: applied now, the request proceeds;
- any other key changed: the request fails with "run `banger daemon restart`".
  Those keys are read once: the dirs, the network (set up at start-up) and
  every plugin key (a plugin's driver reads its keys when it is built).

Putting the file back as it was clears a pending error without a restart.
"""

from __future__ import annotations

import logging
import time

from banger_core.api.models import DaemonConfig
from banger_core.common.config import Config, ConfigError, display_path, file_stamp, load_config
from banger_core.daemon.runtime import Runtime

log = logging.getLogger("banger.config")

#: Core keys read on every request that uses them (VM creation), so a new value applies to the next one.
LIVE_KEYS = frozenset(
    {"default_image", "default_kernel", "vmm_backend", "vm_defaults", "file_sync", "ssh_ready_timeout", "warm_auto"}
)


class ConfigWatch:
    """Keeps ``rt.config`` in step with the file; remembers why it could not."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.loaded_at = time.time()
        #: The stamp of the file as last examined (applied or refused): unchanged means nothing to do.
        self._seen = rt.config.stamp
        #: Why the file on disk is not what the daemon runs with (None: it is).
        self.problem: str | None = None

    def check(self) -> None:
        """Apply a changed file's live keys; raise :class:`ConfigError` while the file cannot be applied."""
        stamp = file_stamp(self.rt.config.path)
        if stamp != self._seen:
            self._seen = stamp
            self.problem = self._examine()
        if self.problem is not None:
            raise ConfigError(self.problem)

    def _examine(self) -> str | None:
        current = self.rt.config
        try:
            new = load_config(self.rt.pm, self.rt.env, current.path)
        except ConfigError as exc:
            log.warning("config not applied: %s", exc)
            return f"{exc} (the daemon keeps running with the config it loaded; fix the file)"
        # The stamp of what was read, not of the file now: a write racing the read is seen next time.
        self._seen = new.stamp
        if new.digest == current.digest:
            return None
        changed = sorted(key for key in new.options if new.data.get(key) != current.data.get(key))
        restart = [key for key in changed if key not in LIVE_KEYS]
        if restart:
            log.warning("config not applied: %s changed and cannot change while the daemon runs", ", ".join(restart))
            return (
                f"config changed since the daemon started ({', '.join(restart)} in "
                f"{display_path(current.path, self.rt.env)}): run `banger daemon restart`"
            )
        for line in new.warnings:
            log.warning("%s", line)
        _apply(current, new)
        self.loaded_at = time.time()
        log.info("config reloaded from %s: %s", current.path, ", ".join(changed) or "no value changed")
        return None

    def describe(self) -> DaemonConfig:
        """What the daemon runs with, for ``GET /v1/daemon`` and ``banger config show``."""
        try:
            self.check()
        except ConfigError:
            pass  # reported through "problem"
        config = self.rt.config
        return DaemonConfig(
            path=str(config.path),
            sha256=config.digest,
            mtime=config.stamp[2] / 1e9 if config.stamp else None,
            loaded_at=self.loaded_at,
            problem=self.problem,
        )


def _apply(current: Config, new: Config) -> None:
    """Swap the values in place: the plugin context and every driver hold this very object.

    Only live keys differ, so what drivers read at build time stays true.
    """
    current.data = new.data
    current.sources = new.sources
    current.warnings = new.warnings
    current.digest = new.digest
    current.stamp = new.stamp
