"""With install.toml present the CLI talks to the installed service's socket and never starts a daemon itself.

The "service" here is a real bangerd (started the user-level way); install.toml,
found through ``$BANGER_INSTALL_TOML``, names its socket, and the CLI runs with
another runtime dir, so only install.toml can lead it there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from banger_core.client.connection import Connection
from banger_core.common import paths
from banger_core.install.record import InstallRecord, NetworkBounds
from tests.support.daemon import DaemonHarness

BANGER = str(Path(sys.executable).parent / "banger")
SERVICE_DOWN = (
    "the installed bangerd service does not answer on {socket}: `sudo banger system restart` starts it again "
    "(`systemctl status bangerd.service` and `journalctl -u bangerd.service` say why it stopped)"
)


def banger(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BANGER, *argv], env=env, capture_output=True, text=True, timeout=60)


def write_record(path: Path, socket: Path, version: str = "dev", commit: str = "0" * 40) -> None:
    record = InstallRecord(
        version=version,
        commit=commit,
        built_at="2026-12-01T00:00:00Z",
        owner="daemon",
        owner_uid=1,
        prefix="/opt/banger",
        venv="/opt/banger/versions/v0",
        socket=str(socket),
        root_socket="/run/banger-root/bangerd-root.sock",
        state_dir="/var/lib/banger",
        cache_dir="/var/cache/banger",
        runtime_dir=str(socket.parent),
        root_runtime_dir="/run/banger-root",
        units=[],
        network=NetworkBounds("banger0", "172.16.0.1", "172.16.0.0/24"),
    )
    path.write_text(record.to_toml())


def installed_env(daemon: DaemonHarness, record: Path) -> dict[str, str]:
    """The daemon's environment, but ``record`` as install.toml and a runtime dir of its own (never created)."""
    return {**daemon.env, "BANGER_INSTALL_TOML": str(record), "XDG_RUNTIME_DIR": str(record.parent / "cli-runtime")}


def test_cli_talks_to_the_installed_socket(daemon: DaemonHarness, tmp_path: Path) -> None:
    daemon.client().ensure_daemon()
    socket = daemon.runtime / "bangerd.sock"
    write_record(tmp_path / "install.toml", socket)
    env = installed_env(daemon, tmp_path / "install.toml")
    assert paths.socket_path(env) == socket  # completion and web links follow it too
    for argv in (["vm", "list"], ["-v", "vm", "list"]):  # the fast path and the click path
        result = banger(env, *argv)
        assert (result.returncode, result.stdout, result.stderr) == (0, "no VMs: `banger vm run` boots one\n", "")
    status = json.loads(banger(env, "daemon", "status", "--json").stdout)
    assert status["running"] is True and status["socket"] == str(socket)


def test_cli_never_starts_a_daemon_when_installed(daemon: DaemonHarness, tmp_path: Path) -> None:
    socket = tmp_path / "run" / "bangerd.sock"  # the service is down: nothing listens there
    write_record(tmp_path / "install.toml", socket)
    env = installed_env(daemon, tmp_path / "install.toml")
    for argv in (["vm", "list"], ["-v", "vm", "list"], ["image", "list"]):
        result = banger(env, *argv)
        assert result.returncode != 0 and result.stdout == ""
        assert result.stderr == f"banger: error: {SERVICE_DOWN.format(socket=socket)}\n", argv
    assert daemon.pid() is None and not socket.parent.exists()
    assert not Path(env["XDG_RUNTIME_DIR"], "banger").exists()


def test_without_install_toml_nothing_changes(banger_env: dict[str, str]) -> None:
    assert not Path(banger_env["BANGER_INSTALL_TOML"]).exists()
    connection = Connection(banger_env)
    assert connection.service is False and connection.autostart is True
    assert Path(connection.socket) == paths.runtime_dir(banger_env) / "bangerd.sock" == paths.socket_path(banger_env)
    assert paths.installed_socket(banger_env) is None


def test_an_unreadable_install_toml_still_means_installed(banger_env: dict[str, str], tmp_path: Path) -> None:
    record = tmp_path / "install.toml"
    record.write_text("this is [not toml")
    env = {**banger_env, "BANGER_INSTALL_TOML": str(record)}
    connection = Connection(env)
    assert connection.service is True and connection.autostart is False
    assert connection.socket == paths.SERVICE_SOCKET


def test_doctor_version_row_reads_the_daemon_and_install_toml(daemon: DaemonHarness, tmp_path: Path) -> None:
    daemon.client().ensure_daemon()
    write_record(tmp_path / "install.toml", daemon.runtime / "bangerd.sock", version="v9.9.9", commit="f" * 40)
    env = installed_env(daemon, tmp_path / "install.toml")
    rows = {row["name"]: row for row in json.loads(banger(env, "doctor", "--json").stdout)["checks"]}
    # This checkout's CLI and daemon are development builds: the comparison is off, and says so.
    assert rows["version"]["status"] == "info"
    assert rows["version"]["summary"] == "version drift not checked: development build (CLI, daemon)"
    version = banger(env, "version").stdout.splitlines()
    assert version[3].startswith("daemon:  dev (commit ") and f"pid {daemon.pid()}" in version[3]
    assert version[4] == "installed: v9.9.9 (commit ffffffff, built 2026-12-01T00:00:00Z) in /opt/banger/versions/v0"


def test_daemon_stop_and_restart_leave_the_service_to_systemd(daemon: DaemonHarness, tmp_path: Path) -> None:
    daemon.client().ensure_daemon()
    pid = daemon.pid()
    write_record(tmp_path / "install.toml", daemon.runtime / "bangerd.sock")
    env = installed_env(daemon, tmp_path / "install.toml")
    for action in ("stop", "restart"):
        result = banger(env, "daemon", action)
        assert result.returncode == 1
        assert result.stderr == (
            "Error: bangerd runs as the installed service: `sudo banger system restart` restarts it "
            f"(`sudo systemctl {action} bangerd.service` to {action} it)\n"
        )
    assert daemon.pid() == pid
