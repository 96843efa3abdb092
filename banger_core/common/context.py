"""Builds the :class:`~banger_hookspecs.PluginContext` handed to provider factories."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from banger_core.common import hostfacts
from banger_core.common.config import Config
from banger_hookspecs import HostOps, PluginContext


def resolved_dirs(config: Config) -> tuple[Path, Path, Path]:
    """``(state_dir, cache_dir, runtime_dir)``; config fills in the XDG defaults."""
    return Path(config["state_dir"]), Path(config["cache_dir"]), Path(config["runtime_dir"])


def make_context(
    config: Config,
    host_ops: HostOps,
    *,
    env: Mapping[str, str] = os.environ,
    logger: logging.Logger | None = None,
) -> PluginContext:
    state, cache, runtime = resolved_dirs(config)
    return PluginContext(
        config=config,
        state_dir=state,
        cache_dir=cache,
        runtime_dir=runtime,
        host_ops=host_ops,
        logger=logger or logging.getLogger("banger"),
        owner_uid=os.geteuid(),
        owner_gid=os.getegid(),
        host=hostfacts.gather(),
    )
