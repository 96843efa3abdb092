"""``banger system install|status|uninstall`` on a rendered root: the files, systemd's verdict, a clean revert."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from banger_core.install.layout import DAEMON_UNIT, ROOT_UNIT
from banger_core.install.record import load_record
from banger_core.install.service import NO_SYSTEMD, systemd_is_pid1
from banger_core.install.units import ROOT_HELPER_CAPABILITIES

BANGER = str(Path(sys.executable).parent / "banger")
#: Debian's base-passwd always has it: an unprivileged account that exists on every test host.
OWNER = "daemon"


def banger(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BANGER, *argv], env=env, capture_output=True, text=True, timeout=120)


def tree(root: Path) -> list[tuple[str, int, str]]:
    """Every path under ``root`` with its mode, and file contents (the before/after comparison)."""
    listing = []
    for path in sorted(root.rglob("*")):
        content = path.read_text() if path.is_file() and not path.is_symlink() else ""
        listing.append((str(path.relative_to(root)), path.lstat().st_mode, content))
    return listing


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    """A packaging root that already holds files of its own, which nothing of banger's may touch."""
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "etc" / "systemd" / "system" / "sshd.service").write_text("[Service]\nExecStart=/usr/sbin/sshd\n")
    (root / "etc" / "hostname").write_text("host\n")
    (root / "var" / "lib" / "other").mkdir(parents=True)
    (root / "var" / "lib" / "other" / "data").write_text("keep me\n")
    (root / "var" / "cache").mkdir()
    (root / "run").mkdir()
    return root


def rendered_units(root: Path) -> tuple[Path, Path]:
    return root / "etc/systemd/system" / ROOT_UNIT, root / "etc/systemd/system" / DAEMON_UNIT


def test_rendered_units_pass_systemd_analyze_verify(banger_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    prefix = tmp_path / "prefix" / "opt" / "banger"
    result = banger(banger_env, "system", "install", "--owner", OWNER, "--root", str(root), "--prefix", str(prefix))
    assert result.returncode == 0, result.stderr
    # `verify` checks that ExecStart is an executable: stand-ins for the virtualenv's scripts (the venv
    # itself is built by test_system_venv; bangerd-root is another branch's console script).
    (prefix / "current" / "bin").mkdir(parents=True)
    for script in ("bangerd", "bangerd-root"):
        (prefix / "current" / "bin" / script).write_text("#!/bin/sh\n")
        (prefix / "current" / "bin" / script).chmod(0o755)
    helper_unit, daemon_unit = rendered_units(root)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(helper_unit), str(daemon_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**banger_env, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr  # no warning either
    owner = pwd.getpwnam(OWNER)
    daemon_text, helper_text = daemon_unit.read_text(), helper_unit.read_text()
    for line in (
        f"User={OWNER}",
        f"ExecStart={prefix}/current/bin/bangerd",
        "Environment=BANGER_ROOT_HELPER=/run/banger-root/bangerd-root.sock",
        "StateDirectory=banger",
        "CacheDirectory=banger",
        "RuntimeDirectory=banger",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "KillMode=process",
    ):
        assert line in daemon_text.splitlines(), line
    assert f"ExecStart={prefix}/current/bin/bangerd-root --owner-uid {owner.pw_uid}" in helper_text.splitlines()
    bounding = next(line for line in helper_text.splitlines() if line.startswith("CapabilityBoundingSet="))
    assert bounding.split("=", 1)[1].split() == [name for name, _ in ROOT_HELPER_CAPABILITIES]
    assert {"RuntimeDirectory=banger-root", "StateDirectory=banger-root"} <= set(helper_text.splitlines())


def test_install_status_uninstall_purge_leaves_the_root_as_it_was(banger_env: dict[str, str], host_root: Path) -> None:
    before = tree(host_root)
    installed = banger(banger_env, "system", "install", "--owner", OWNER, "--root", str(host_root))
    assert installed.returncode == 0, installed.stderr
    record = load_record(host_root / "etc/banger/install.toml")
    assert (record.owner, record.owner_uid, record.prefix) == (OWNER, pwd.getpwnam(OWNER).pw_uid, "/opt/banger")
    assert (record.socket, record.root_socket) == ("/run/banger/bangerd.sock", "/run/banger-root/bangerd-root.sock")
    assert (record.network.bridge_name, record.network.cidr) == ("banger0", "172.16.0.0/24")
    assert record.units == ["/etc/systemd/system/bangerd-root.service", "/etc/systemd/system/bangerd.service"]
    assert record.created_dirs == ["/etc/banger"]  # etc/systemd/system was there before

    status = banger(banger_env, "system", "status", "--root", str(host_root), "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["installed"] is True and shown["owner"] == OWNER and shown["units"] == {}
    human = banger(banger_env, "system", "status", "--root", str(host_root))
    assert f"units   rendered under {host_root} (not running)" in human.stdout

    # What the running services would have left: state, cache, runtime dirs.
    for directory in (
        "var/lib/banger/images",
        "var/lib/banger-root",
        "var/cache/banger",
        "run/banger/vms",
        "run/banger-root",
    ):
        (host_root / directory).mkdir(parents=True)
    (host_root / "var/lib/banger/banger.db").write_text("state")
    removed = banger(banger_env, "system", "uninstall", "--purge", "--root", str(host_root))
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith("uninstalled banger ")
    assert tree(host_root) == before


def test_uninstall_without_purge_keeps_the_state(banger_env: dict[str, str], host_root: Path) -> None:
    assert banger(banger_env, "system", "install", "--owner", OWNER, "--root", str(host_root)).returncode == 0
    (host_root / "var/lib/banger").mkdir(parents=True)
    (host_root / "var/lib/banger/banger.db").write_text("state")
    removed = banger(banger_env, "system", "uninstall", "--root", str(host_root))
    assert removed.returncode == 0, removed.stderr
    assert "/var/lib/banger and /var/cache/banger kept (--purge deletes them)" in removed.stdout
    assert (host_root / "var/lib/banger/banger.db").read_text() == "state"
    assert not (host_root / "etc/banger").exists() and not rendered_units(host_root)[0].exists()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--owner", "no-such-user-here"],
            "banger: error: --owner no-such-user-here: no such user on this host: pass the login of the person who "
            "runs banger (create it first with useradd if needed)",
        ),
        (
            ["--owner", "root"],
            "banger: error: --owner root: bangerd must not run as root (uid 0): pass the unprivileged login of the "
            "person who runs banger; only bangerd-root keeps root's capabilities",
        ),
        (
            ["--owner", OWNER, "--prefix", "opt/banger"],
            "banger: error: --prefix 'opt/banger' must be an absolute path without '..' or '//', e.g. /opt/banger",
        ),
        (
            ["--owner", OWNER, "--prefix", "/opt/banger/../../usr"],
            "banger: error: --prefix '/opt/banger/../../usr' must be an absolute path without '..' or '//', "
            "e.g. /opt/banger",
        ),
        (
            ["--owner", OWNER, "--prefix", "/usr"],
            "banger: error: --prefix /usr is a system directory: give banger its own, e.g. /opt/banger",
        ),
    ],
)
def test_bad_owner_or_prefix_is_one_line_and_writes_nothing(
    banger_env: dict[str, str], host_root: Path, argv: list[str], error: str
) -> None:
    before = tree(host_root)
    result = banger(banger_env, "system", "install", *argv, "--root", str(host_root))
    assert result.returncode == 1
    assert result.stderr == error + "\n"
    assert tree(host_root) == before


@pytest.mark.skipif(systemd_is_pid1(), reason="this host runs systemd: the refusal cannot happen here")
@pytest.mark.parametrize("argv", [["install", "--owner", OWNER], ["restart"]])
def test_without_systemd_as_pid1_live_commands_refuse_in_one_line(banger_env: dict[str, str], argv: list[str]) -> None:
    result = banger(banger_env, "system", *argv)
    assert result.returncode == 1
    assert result.stderr == f"banger: error: {NO_SYSTEMD}\n"


def test_status_and_uninstall_when_not_installed(banger_env: dict[str, str], tmp_path: Path) -> None:
    missing = banger_env["BANGER_INSTALL_TOML"]
    for argv in (["status"], ["uninstall"]):
        result = banger(banger_env, "system", *argv)
        assert result.returncode == 1
        assert result.stderr == (
            f"banger: error: banger is not installed as a service (no {missing}): `banger system install` installs it\n"
        )
    assert not os.path.exists(missing)


def test_a_damaged_install_toml_is_one_line(banger_env: dict[str, str], host_root: Path) -> None:
    assert banger(banger_env, "system", "install", "--owner", OWNER, "--root", str(host_root)).returncode == 0
    record = host_root / "etc/banger/install.toml"
    record.write_text(record.read_text().replace("owner_uid = ", 'owner_uid = "x" # '))
    result = banger(banger_env, "system", "status", "--root", str(host_root))
    assert result.returncode == 1
    assert result.stderr == (
        f"banger: error: {record}: key 'owner_uid' is missing or not an integer: "
        "reinstall with `banger system install`\n"
    )
    record.write_text("not = [toml")
    result = banger(banger_env, "system", "uninstall", "--root", str(host_root))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"banger: error: {record}: cannot read the install record (")
    assert (host_root / "etc/systemd/system" / DAEMON_UNIT).exists()  # nothing removed on a bad record


def test_an_interpreter_the_owner_cannot_reach_is_refused() -> None:
    """pyenv under a 0700 /root passed as root; bangerd, the owner, then failed at exec after "installed"."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:  # pytest's own tmp_path sits under a 0700 directory
        _check_reachability(Path(scratch))


def _check_reachability(tmp_path: Path) -> None:
    from banger_core.common.errors import BangerError
    from banger_core.install.venv import require_runnable_by

    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    python = home / "bin" / "python3"
    python.write_text("")
    python.chmod(0o755)
    tmp_path.chmod(0o755)
    home.chmod(0o700)  # root's private home
    owner = pwd.getpwnam("daemon")
    with pytest.raises(BangerError) as refused:
        require_runnable_by(owner.pw_uid, [owner.pw_gid], "daemon", str(python))
    assert str(refused.value).startswith(f"daemon cannot reach {python}: {home} is not searchable by that user;")
    home.chmod(0o711)
    require_runnable_by(owner.pw_uid, [owner.pw_gid], "daemon", str(python))
    python.chmod(0o700)
    with pytest.raises(BangerError, match=f"daemon cannot execute {python}"):
        require_runnable_by(owner.pw_uid, [owner.pw_gid], "daemon", str(python))
    # The owner's group, and the file's owner, get their own bits.
    python.chmod(0o710)
    os.chown(python, 0, owner.pw_gid)
    require_runnable_by(owner.pw_uid, [owner.pw_gid], "daemon", str(python))
    os.chown(python, owner.pw_uid, 0)
    python.chmod(0o700)
    require_runnable_by(owner.pw_uid, [owner.pw_gid], "daemon", str(python))
