"""config.toml edits reach a running daemon: applied, or every request fails saying why (real daemon)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent
ORIGINAL = 'default_image = "fake-tiny"\n'


def banger(h: DaemonHarness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "banger", *args], env=h.env, capture_output=True, text=True, timeout=120)


def config_file(h: DaemonHarness) -> Path:
    return Path(h.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"


def shown(h: DaemonHarness) -> dict[str, object]:
    result = banger(h, "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_live_keys_apply_to_the_next_request(daemon: DaemonHarness) -> None:
    client = daemon.client()
    assert client.vms.plan().values.image == "fake-tiny"
    pid = daemon.pid()
    config_file(daemon).write_text('default_image = "fake-other"\n[vm_defaults]\nvcpu = 3\n')
    plan = client.vms.plan()
    assert plan.values.image == "fake-other" and plan.sources["image"] == "config"
    assert plan.values.vcpus == 3 and plan.sources["vcpus"] == "config"
    assert daemon.pid() == pid  # applied by the running daemon, not by a new one
    info = shown(daemon)
    running = info["daemon"]
    assert isinstance(running, dict)
    assert running["pid"] == pid and running["same_as_disk"] is True and running["problem"] is None
    assert running["path"] == str(config_file(daemon)) and running["sha256"] == info["sha256"]
    text = banger(daemon, "config", "show").stdout.splitlines()
    assert text[1].startswith(f"daemon:      pid {pid} runs with ~/.config/banger/config.toml (sha256 ")
    assert text[1].endswith(": same as on disk")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("default_image = [\n", "~/.config/banger/config.toml: invalid TOML: "),
        ('colour = "blue"\n', "~/.config/banger/config.toml: unknown key 'colour': remove it or check its spelling"),
        ("ssh_ready_timeout = 'soon'\n", "~/.config/banger/config.toml: key 'ssh_ready_timeout' must be an integer"),
    ],
)
def test_invalid_edit_fails_requests_and_changes_nothing(daemon: DaemonHarness, text: str, error: str) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    client.vms.create(name="kept", backend="fakevmm", start=False)
    pid = daemon.pid()
    config_file(daemon).write_text(text)
    for args in (("vm", "list"), ("vm", "create", "--name", "new", "--backend", "fakevmm", "--no-start")):
        result = banger(daemon, *args)
        assert result.returncode == 1
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"banger: error: {error}"), lines
        assert lines[0].endswith("(the daemon keeps running with the config it loaded; fix the file)")
    status = json.loads(banger(daemon, "daemon", "status", "--json").stdout)
    assert status["pid"] == pid and status["config"]["problem"].startswith(error)
    config_file(daemon).write_text(ORIGINAL)  # put back as it was: no restart needed
    assert [vm.name for vm in client.vms.list()] == ["kept"]
    assert client.vms.plan().values.image == "fake-tiny" and daemon.pid() == pid


@pytest.mark.parametrize(
    ("line", "key"),
    [('cidr = "172.16.9.0/24"\nbridge_ip = "172.16.9.1"', "bridge_ip, cidr"), ('log_level = "debug"', "log_level")],
)
def test_key_read_at_start_asks_for_a_restart_which_applies_it(daemon: DaemonHarness, line: str, key: str) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    first = daemon.pid()
    config_file(daemon).write_text(f'default_image = "fake-other"\n{line}\n')
    message = (
        f"config changed since the daemon started ({key} in ~/.config/banger/config.toml): run `banger daemon restart`"
    )
    result = banger(daemon, "vm", "list")
    assert result.returncode == 1 and result.stderr.splitlines() == [f"banger: error: {message}"]
    running = shown(daemon)["daemon"]
    assert isinstance(running, dict) and running["same_as_disk"] is False and running["problem"] == message
    line_shown = banger(daemon, "config", "show").stdout.splitlines()[1]
    assert line_shown.endswith(f": the file on disk differs: {message}")
    restarted = banger(daemon, "daemon", "restart")
    assert restarted.returncode == 0, restarted.stderr
    second = daemon.pid()
    assert restarted.stdout.splitlines() == [f"bangerd (pid {first}) stopped", f"bangerd (pid {second}) started"]
    assert second != first
    assert banger(daemon, "vm", "list").returncode == 0
    assert client.vms.plan().values.image == "fake-other"
    running = shown(daemon)["daemon"]
    assert isinstance(running, dict) and running["same_as_disk"] is True


def test_config_show_names_the_file_the_daemon_runs_with(daemon: DaemonHarness, tmp_path: Path) -> None:
    assert banger(daemon, "config", "show").stdout.splitlines()[1] == (
        "daemon:      not running (it reads the file when it starts)"
    )
    daemon.client().vms.list()
    other = tmp_path / "other.toml"
    other.write_text(ORIGINAL)
    elsewhere = subprocess.run(
        [BIN / "banger", "config", "show"],
        env={**daemon.env, "BANGER_CONFIG": str(other)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = elsewhere.stdout.splitlines()[1]
    assert line.startswith(f"daemon:      pid {daemon.pid()} runs with ~/.config/banger/config.toml (sha256 ")
    assert line.endswith(
        ", not with this file (another BANGER_CONFIG or XDG_CONFIG_HOME): `banger daemon restart` here"
    )
