"""ssh-config: the generated file, and an Include block that leaves the rest of ~/.ssh/config alone."""

from __future__ import annotations

import stat
from datetime import datetime
from pathlib import Path

import pytest

from banger_core.api.models import SshEndpoint, VmView
from banger_core.common import sshconfig
from banger_core.common.errors import BangerError
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


def vm_view(name: str, state: str, ssh: SshEndpoint | None) -> VmView:
    return VmView(
        id=f"id-{name}",
        name=name,
        state=state,
        image="debian-bookworm",
        kernel="generic-6.1",
        backend="qemu",
        network="usernet",
        vcpus=2,
        memory_mib=2048,
        disk_size=8 << 30,
        guest_ip=None,
        mac="52:54:00:00:00:01",
        created_at=datetime(2026, 12, 1, 5, 0, 0),
        started_at=None,
        last_error=None,
        remove_on_exit=False,
        host_access=False,
        spec_sources={},
        ssh=ssh,
    )


def test_render_lists_running_vms_and_defaults(tmp_path: Path) -> None:
    text = sshconfig.render(
        tmp_path / "id_ed25519",
        tmp_path / "known hosts",
        [vm_view("web", "running", SshEndpoint(host="127.0.0.1", port=40022)), vm_view("db", "stopped", None)],
    )
    assert "Host web.vm\n    HostName 127.0.0.1\n    Port 40022\n    HostKeyAlias web.vm\n" in text
    assert "Host db.vm" not in text
    assert f"Host *.vm\n    User root\n    IdentityFile {tmp_path}/id_ed25519\n" in text
    assert f'UserKnownHostsFile "{tmp_path}/known hosts"' in text
    assert "StrictHostKeyChecking yes" in text


def test_a_symlinked_ssh_config_stays_a_link_and_its_target_is_edited(banger_env: dict[str, str]) -> None:
    """Dotfile managers link ~/.ssh/config into a repository: edit the file, keep the link."""
    home = Path(banger_env["HOME"])
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "ssh_config"
    target.write_text(USER_CONFIG)
    target.chmod(0o644)
    link = home / ".ssh" / "config"
    link.parent.mkdir(mode=0o700)
    link.symlink_to("../dotfiles/ssh_config")
    assert invoke_cli(["ssh-config", "--install"], banger_env).stdout == "added to ~/.ssh/config\n"
    assert link.is_symlink() and str(link.readlink()) == "../dotfiles/ssh_config"
    assert target.read_text().startswith(sshconfig.BEGIN) and target.read_text().endswith(USER_CONFIG)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in dotfiles.iterdir()) == ["ssh_config"]  # no temporary file left behind
    assert invoke_cli(["ssh-config", "--uninstall"], banger_env).stdout == "removed from ~/.ssh/config\n"
    assert link.is_symlink() and str(link.readlink()) == "../dotfiles/ssh_config"
    assert target.read_bytes() == USER_CONFIG.encode()


def test_a_dangling_ssh_config_link_is_refused_and_left_alone(banger_env: dict[str, str]) -> None:
    link = Path(banger_env["HOME"]) / ".ssh" / "config"
    link.parent.mkdir(mode=0o700)
    missing = Path(banger_env["HOME"]) / "gone" / "ssh_config"
    link.symlink_to(missing)
    with pytest.raises(BangerError) as caught:
        sshconfig.install(banger_env)
    assert str(caught.value) == (
        f"~/.ssh/config is a symlink to {missing}, which does not exist: "
        "create that file (or remove the link), then run `banger ssh-config --install` again"
    )
    assert link.is_symlink() and link.readlink() == missing and not missing.parent.exists()


def test_the_generated_file_is_written_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "ssh_config"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "ssh_config"
    link.symlink_to(real)
    sshconfig.write_atomic(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
