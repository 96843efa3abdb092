"""Opt-in pytest plugin for testing banger plugins (ours or a third party's) in isolation.

Enable it with ``pytest_plugins = ["banger_core.testing"]`` in a ``conftest.py``
(or ``pytest -p banger_core.testing``). It provides:

* ``banger_env`` — an environment dict whose HOME/XDG dirs point into ``tmp_path``;
* ``banger_site`` — a :class:`FakeSite`: a directory on ``sys.path`` where
  :meth:`FakeSite.add_plugin` writes a module plus a fake ``.dist-info`` with
  entry points, exactly what ``pip install`` of a plugin would leave behind;
* ``plugin_manager`` — a fresh manager (core + installed entry points + the
  fake site), never a shared global;
* ``plugin_context`` — a real :class:`~banger_hookspecs.PluginContext` whose
  directories live in ``tmp_path`` (config: defaults, host ops: unprivileged);
* :class:`RecordingProgress` — a ``Progress`` that remembers what it was told;
* :func:`mint_tls` — a throwaway CA and a certificate for ``127.0.0.1`` it signs
  (with the ``openssl`` CLI), to serve real HTTPS on loopback.

Example::

    def test_my_backend(banger_site, banger_env):
        banger_site.add_plugin("acme", "acme-banger", "1.0", source='''
    from banger_hookspecs import hookimpl, VmmBackend
    @hookimpl
    def banger_vmm_backends():
        return [VmmBackend(name="acme", description="x", factory=lambda ctx: None)]
    ''')
        pm = get_plugin_manager(banger_env)
        assert "acme" in pm.vmm_backends()
"""

from __future__ import annotations

import importlib
import re
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from banger_core.common.plugins import PluginManager, get_plugin_manager
from banger_hookspecs import PluginContext

if TYPE_CHECKING:
    from click.testing import Result


def _normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "_", dist)


class FakeSite:
    """A ``sys.path`` directory holding fake installed distributions."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write_dist_info(self, dist: str, version: str, entry_points: dict[str, str], group: str = "banger") -> Path:
        """Write ``<dist>-<version>.dist-info`` declaring ``entry_points`` in ``group``."""
        info = self.root / f"{_normalize(dist)}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = [f"[{group}]"] + [f"{name} = {target}" for name, target in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        (info / "RECORD").write_text("")
        importlib.invalidate_caches()
        return info

    def add_plugin(self, name: str, dist: str, version: str = "1.0", *, source: str, module: str | None = None) -> str:
        """Write module ``module`` (default ``<name>_banger_plugin``) and register it as entry point ``name``."""
        module = module or f"{name.replace('-', '_')}_banger_plugin"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(module, None)
        self.write_dist_info(dist, version, {name: module})
        return module


def isolated_env(root: Path, *, cache_home: Path | None = None, config: str | None = None) -> dict[str, str]:
    """An environment whose HOME and XDG dirs live under ``root``, for tests and benchmarks.

    The runtime dir is a short new path under /tmp (Unix socket paths are
    limited to 108 bytes; ``root`` may be long): remove
    ``env["XDG_RUNTIME_DIR"]`` when done. ``cache_home`` shares a cache (the
    golden image build, downloads) between environments; ``config`` is written
    to ``config.toml``.
    """
    import os
    import tempfile

    home = root / "home"
    (home / ".config" / "banger").mkdir(parents=True, exist_ok=True)
    runtime = Path(tempfile.mkdtemp(prefix="bgr-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANGER_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_CACHE_HOME=str(cache_home or home / ".cache"),
        XDG_RUNTIME_DIR=str(runtime),
        # A host where banger is installed as a service must not send the tests to that service.
        BANGER_INSTALL_TOML=str(root / "not-installed" / "install.toml"),
    )
    if config is not None:
        (home / ".config" / "banger" / "config.toml").write_text(config)
    return env


@pytest.fixture
def banger_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment isolated from the real user's config and state (see :func:`isolated_env`)."""
    import shutil

    env = isolated_env(tmp_path)
    yield env
    shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


@pytest.fixture
def banger_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    """A fake site-packages directory on ``sys.path`` for plugins made up by a test."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    before = set(sys.modules)
    yield FakeSite(root)
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "") or "").startswith(str(root)):
            del sys.modules[name]
    importlib.invalidate_caches()


def invoke_cli(args: list[str], env: dict[str, str]) -> Result:
    """Run ``banger ARGS`` in-process with ``env``; returns click's ``Result``.

    Plugins come from the real entry points plus anything ``banger_site`` wrote.
    """
    from click.testing import CliRunner

    from banger_core.cli.app import App, cli

    return CliRunner().invoke(cli, args, obj=App(env=dict(env)), env=env, catch_exceptions=False)


@pytest.fixture
def plugin_manager(banger_env: dict[str, str]) -> PluginManager:
    """A fresh plugin manager for this test."""
    return get_plugin_manager(banger_env)


class RecordingProgress:
    """A :class:`~banger_hookspecs.Progress` that records every call, for assertions."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.advances: list[tuple[int, int | None, str]] = []
        self.lines: list[str] = []

    def step(self, message: str) -> None:
        self.steps.append(message)

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        self.advances.append((done, total, unit))

    def log(self, message: str) -> None:
        self.lines.append(message)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files from :func:`mint_tls`: the CA clients must trust, and the server's certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def mint_tls(directory: Path) -> TlsFiles:
    """A new CA (valid two days) in ``directory`` and a server certificate for ``127.0.0.1`` signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_key = directory / "ca.key"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            *new_key,
            "-keyout",
            ca_key,
            "-out",
            files.ca,
            "-subj",
            f"/CN=banger test CA {directory.name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-CA",
            files.ca,
            "-CAkey",
            ca_key,
            *new_key,
            "-keyout",
            files.key,
            "-out",
            files.cert,
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
        check=True,
        capture_output=True,
    )
    return files


def make_plugin_context(env: dict[str, str], config_overrides: Mapping[str, object] | None = None) -> PluginContext:
    """A real context for ``env`` (see ``banger_env``), config defaults plus overrides."""
    from banger_core.common.config import load_config
    from banger_core.common.context import UnprivilegedHostOps, make_context

    config = load_config(get_plugin_manager(env), env)
    for key, value in (config_overrides or {}).items():
        config.data[key] = value
        config.sources[key] = "test"
    return make_context(config, UnprivilegedHostOps(), env=env)


@pytest.fixture
def plugin_context(banger_env: dict[str, str]) -> PluginContext:
    """A plugin context whose state/cache/runtime dirs are inside the test's tmp_path."""
    return make_plugin_context(banger_env)
