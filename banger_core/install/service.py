"""Install, inspect, restart and remove banger's two systemd services.

A live install (``root`` = ``/``) needs root and systemd as PID 1; ``--root
DIR`` writes the same files under DIR and runs nothing (packaging, tests).
Every file and directory an install creates is named in install.toml, so an
uninstall removes exactly those and nothing of the host's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from banger_core.common.buildinfo import BuildInfo
from banger_core.common.errors import BangerError
from banger_core.install.layout import (
    CACHE_DIR,
    DAEMON_UNIT,
    ROOT_RUNTIME_DIR,
    ROOT_SOCKET,
    ROOT_STATE_DIR,
    ROOT_UNIT,
    RUNTIME_DIR,
    STATE_DIR,
    Layout,
    Owner,
)
from banger_core.install.record import InstallRecord, NetworkBounds, load_record
from banger_core.install.units import daemon_unit, root_helper_unit

NO_SYSTEMD = "PID 1 is not systemd: use --root DIR to render the files for packaging"
UNITS = (ROOT_UNIT, DAEMON_UNIT)  # start order: the helper first
SYSTEMCTL_TIMEOUT = 120.0


def systemd_is_pid1(run_dir: Path = Path("/run/systemd/system")) -> bool:
    """sd_booted(): systemd creates this directory when it runs as PID 1."""
    return run_dir.is_dir()


def require_live_host() -> None:
    """A live install, restart or uninstall needs systemd as PID 1 and root."""
    if not systemd_is_pid1():
        raise BangerError(NO_SYSTEMD)
    if os.geteuid() != 0:
        raise BangerError("installing services needs root: run it with sudo")


def systemctl(*args: str) -> None:
    """``systemctl ARGS``; a failure is one line with systemctl's own reason."""
    try:
        done = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BangerError(f"systemctl {' '.join(args)} failed: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BangerError(f"systemctl {' '.join(args)} failed: {detail}")


def unit_state(unit: str) -> str:
    """``systemctl is-active UNIT``'s word (active, inactive, failed, ...)."""
    done = subprocess.run(
        ["systemctl", "is-active", unit], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT, check=False
    )
    return done.stdout.strip() or "unknown"


def network_bounds(config: Mapping[str, object]) -> NetworkBounds:
    """The owner's bridge settings (config.toml or defaults): what bangerd-root will agree to set up."""
    return NetworkBounds(
        bridge_name=str(config.get("bridge_name") or "banger0"),
        bridge_ip=str(config.get("bridge_ip")),
        cidr=str(config.get("cidr")),
    )


def make_record(layout: Layout, owner: Owner, info: BuildInfo, venv_name: str, network: NetworkBounds) -> InstallRecord:
    return InstallRecord(
        version=info.version,
        commit=info.commit,
        built_at=info.built,
        owner=owner.name,
        owner_uid=owner.uid,
        prefix=layout.prefix,
        venv=layout.venv(venv_name),
        socket=f"{RUNTIME_DIR}/bangerd.sock",
        root_socket=ROOT_SOCKET,
        state_dir=STATE_DIR,
        cache_dir=CACHE_DIR,
        runtime_dir=RUNTIME_DIR,
        root_runtime_dir=ROOT_RUNTIME_DIR,
        units=[layout.root_unit, layout.daemon_unit],
        network=network,
    )


class _Writer:
    """Writes target paths under the layout's root, remembering each directory it had to create."""

    def __init__(self, layout: Layout, already_created: list[str]) -> None:
        self.layout = layout
        self.created = list(already_created)

    def make_dirs(self, target: str) -> None:
        parts = [p for p in target.split("/") if p]
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            staged = self.layout.staged(path)
            if not staged.is_dir():
                staged.mkdir(mode=0o755)
                staged.chmod(0o755)  # not the umask's: systemd and the owner's CLI read below it
                if path not in self.created:
                    self.created.append(path)

    def write(self, target: str, text: str) -> None:
        self.make_dirs(os.path.dirname(target))
        staged = self.layout.staged(target)
        scratch = staged.with_name(f".{staged.name}.new")
        scratch.write_text(text)
        scratch.chmod(0o644)
        scratch.replace(staged)


def write_install(layout: Layout, record: InstallRecord) -> InstallRecord:
    """Write both units and install.toml (under ``layout.root``); return the record as written."""
    previous = layout.staged(layout.install_toml)
    earlier = load_record(previous).created_dirs if previous.exists() else []
    writer = _Writer(layout, list(dict.fromkeys([*earlier, *record.created_dirs])))
    writer.write(layout.root_unit, root_helper_unit(record))
    writer.write(layout.daemon_unit, daemon_unit(record))
    writer.make_dirs(os.path.dirname(layout.install_toml))
    final = InstallRecord(**{**record.__dict__, "created_dirs": writer.created})
    writer.write(layout.install_toml, final.to_toml())
    return final


def install_venv(layout: Layout, venv_name: str, wheels: Path, *, offline: bool) -> list[str]:
    """The venv at PREFIX/versions/NAME, then ``current`` pointed at it (atomically: a rename).

    Returns the directories it had to create (for the record).
    """
    from banger_core.install.venv import create_venv, relocate_scripts

    writer = _Writer(layout, [])
    writer.make_dirs(layout.versions)
    venv = layout.staged(layout.venv(venv_name))
    create_venv(venv, wheels, offline=offline)
    if not layout.live:
        relocate_scripts(venv, layout.venv(venv_name))
    link = layout.staged(layout.current)
    scratch = link.with_name(".current.new")
    scratch.unlink(missing_ok=True)
    scratch.symlink_to(f"versions/{venv_name}")
    scratch.replace(link)
    return writer.created


def start_services() -> None:
    systemctl("daemon-reload")
    systemctl("enable", "--now", *UNITS)


def revert_host(record: InstallRecord, install_toml: str, run: Callable[[list[str]], None]) -> None:
    """Ask bangerd-root to undo what it changed on the host (ip_forward, the nft table, the bridge)."""
    helper = Path(record.prefix) / "current" / "bin" / "bangerd-root"
    if helper.exists():
        run([str(helper), "--revert", "--owner-uid", str(record.owner_uid), "--install-toml", install_toml])


def remove_install(layout: Layout, record: InstallRecord, *, purge: bool) -> list[str]:
    """Delete what the install wrote (and with ``purge`` the services' state); return what was removed."""
    removed: list[str] = []

    def drop(target: str) -> None:
        staged = layout.staged(target)
        if staged.is_symlink() or staged.is_file():
            staged.unlink()
        elif staged.is_dir():
            shutil.rmtree(staged)
        else:
            return
        removed.append(target)

    for unit in (layout.root_unit, layout.daemon_unit):
        drop(unit)
    drop(layout.current)
    drop(layout.versions)
    if purge:  # the fixed service directories, never paths read from the (editable) record
        for directory in (STATE_DIR, CACHE_DIR, RUNTIME_DIR, ROOT_RUNTIME_DIR, ROOT_STATE_DIR):
            drop(directory)
    drop(layout.install_toml)
    for directory in sorted(record.created_dirs, key=lambda d: d.count("/"), reverse=True):
        staged = layout.staged(directory)
        if staged.is_dir() and not any(staged.iterdir()):
            staged.rmdir()
            removed.append(directory)
    return removed
