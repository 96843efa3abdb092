"""Private dirs through the real CLI and daemon: created 0700, an existing non-private one refused, never chmod-ed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.common import paths
from banger_core.common.errors import BangerError
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def refusal(path: Path, problem: str, key: str) -> str:
    return (
        f"{path} is not a private directory ({problem}) and banger will not change an existing directory's "
        f"permissions: set {key} in config.toml to a path that does not exist yet (banger creates it with mode 0700)"
    )


def set_runtime_dir(h: DaemonHarness, value: str) -> None:
    config = Path(h.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(f'default_image = "fake-tiny"\nruntime_dir = "{value}"\n')


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable sticky directory like /tmp (short: sockets live in it)."""
    path = Path(tempfile.mkdtemp(prefix="bgr-shared-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_shared_runtime_dir_is_refused_by_cli_and_daemon_and_left_alone(
    daemon: DaemonHarness, shared_dir: Path
) -> None:
    set_runtime_dir(daemon, str(shared_dir))
    result = subprocess.run([BIN / "banger", "vm", "list"], env=daemon.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    expected = refusal(shared_dir, "mode 1777, open to other users", "runtime_dir")
    assert result.stderr.splitlines() == [f"banger: error: {expected}"]
    direct = subprocess.Popen(
        [sys.executable, "-m", "banger_core.daemon", "--background"], env=daemon.env, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = direct.communicate(timeout=30)
    finally:
        if direct.poll() is None:  # it took the directory over: the bug; end the daemon we started
            direct.kill()
            direct.wait()
    assert direct.returncode == 1
    assert stderr.splitlines() == [f"bangerd: error: {expected}"]
    assert mode(shared_dir) == 0o1777 and list(shared_dir.iterdir()) == []


def test_home_as_runtime_dir_is_refused_and_home_keeps_its_mode(daemon: DaemonHarness) -> None:
    home = Path(daemon.env["HOME"])
    home.chmod(0o755)
    set_runtime_dir(daemon, "~")
    assert paths.socket_path(daemon.env) == home / "bangerd.sock"  # the CLI reads "~" as the daemon does
    result = subprocess.run([BIN / "banger", "vm", "list"], env=daemon.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "banger: error: " + refusal(home, "mode 0755, open to other users", "runtime_dir")
    ]
    assert mode(home) == 0o755 and daemon.pid() is None


def test_runtime_dir_under_home_is_created_private_and_both_sides_use_it(daemon: DaemonHarness) -> None:
    set_runtime_dir(daemon, "~/run/banger")
    expected = Path(daemon.env["HOME"]) / "run" / "banger"
    assert daemon.client().vms.list() == []
    status = daemon.client().daemon.status()
    assert status.socket == str(expected / "bangerd.sock") and mode(expected) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory (or link) owned by another user")
@pytest.mark.parametrize("via_link", [False, True])
def test_dir_or_link_of_another_user_is_refused(tmp_path: Path, via_link: bool) -> None:
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    checked = target
    if via_link:  # the directory is ours and private; the link to it belongs to someone else
        checked = tmp_path / "link"
        checked.symlink_to(target)
        os.lchown(checked, 65534, 65534)
    else:
        os.chown(target, 65534, 65534)
    with pytest.raises(BangerError) as err:
        paths.ensure_private_dir(checked, "state_dir")
    assert str(err.value) == refusal(checked, "owned by uid 65534, not by you", "state_dir")
    assert mode(target) == 0o700
