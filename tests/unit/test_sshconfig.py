"""ssh-config: the generated file, and an Include block that leaves the rest of ~/.ssh/config alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from banger_core import sshconfig
from banger_core.errors import BangerError
from banger_core.testing import invoke_cli

USER_CONFIG = "Host github.com\n    User git\n\n# trailing comment without newline"


def test_print_install_uninstall_round_trip(banger_env: dict[str, str]) -> None:
    ssh_config = Path(banger_env["HOME"]) / ".ssh" / "config"
    ssh_config.parent.mkdir(mode=0o700)
    ssh_config.write_text(USER_CONFIG)
    ssh_config.chmod(0o644)
    assert invoke_cli(["ssh-config"], banger_env).stdout == "Include ~/.config/banger/ssh_config\n"
    assert invoke_cli(["ssh-config", "--install"], banger_env).stdout == "added to ~/.ssh/config\n"
    text = ssh_config.read_text()
    assert text.startswith(sshconfig.BEGIN + "\nInclude ~/.config/banger/ssh_config\n" + sshconfig.END + "\n")
    assert text.endswith(USER_CONFIG)
    assert stat.S_IMODE(ssh_config.stat().st_mode) == 0o644  # the user's mode is kept
    assert invoke_cli(["ssh-config", "--install"], banger_env).stdout == "already in ~/.ssh/config\n"
    assert ssh_config.read_text() == text
    assert invoke_cli(["ssh-config", "--uninstall"], banger_env).stdout == "removed from ~/.ssh/config\n"
    assert ssh_config.read_bytes() == USER_CONFIG.encode()
    assert "nothing to remove" in invoke_cli(["ssh-config", "--uninstall"], banger_env).stdout


def test_install_creates_a_private_file(banger_env: dict[str, str]) -> None:
    invoke_cli(["ssh-config", "--install"], banger_env)
    ssh_config = Path(banger_env["HOME"]) / ".ssh" / "config"
    assert stat.S_IMODE(ssh_config.stat().st_mode) == 0o600
    assert stat.S_IMODE(ssh_config.parent.stat().st_mode) == 0o700
    sshconfig.uninstall(banger_env)
    assert ssh_config.read_text() == ""


def test_a_half_block_is_refused(banger_env: dict[str, str]) -> None:
    ssh_config = Path(banger_env["HOME"]) / ".ssh" / "config"
    ssh_config.parent.mkdir()
    ssh_config.write_text(sshconfig.BEGIN + "\nInclude x\n")
    with pytest.raises(BangerError, match="start marker but not its end marker"):
        sshconfig.uninstall(banger_env)


def test_render_lists_running_vms_and_defaults(tmp_path: Path) -> None:
    text = sshconfig.render(
        tmp_path / "id_ed25519",
        tmp_path / "known hosts",
        [
            {"name": "web", "state": "running", "ssh": {"host": "127.0.0.1", "port": 40022}},
            {"name": "db", "state": "stopped", "ssh": None},
        ],
    )
    assert "Host web.vm\n    HostName 127.0.0.1\n    Port 40022\n    HostKeyAlias web.vm\n" in text
    assert "Host db.vm" not in text
    assert f"Host *.vm\n    User root\n    IdentityFile {tmp_path}/id_ed25519\n" in text
    assert f'UserKnownHostsFile "{tmp_path}/known hosts"' in text
    assert "StrictHostKeyChecking yes" in text
