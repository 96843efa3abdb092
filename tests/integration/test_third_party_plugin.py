"""A third-party plugin, installed the way a user installs one: wheels, a fresh venv, `pip install`.

examples/banger-image-example is built with `pip wheel`, installed beside banger
(this checkout, as wheels: no editable install, no checkout on sys.path) into a
new venv, and driven through that venv's `banger` with an isolated HOME: listed
as external and active, an image pulled through its `dir:` source by a real
daemon, then `pip uninstall`ed cleanly.

pip needs its package index here, as a user's would: for hatchling (wheels are
built in pip's isolated build environments) and banger's third-party
dependencies, which pip's cache serves after the first run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from banger_core.testing import isolated_env
from tests.support.daemon import DaemonHarness

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "banger-image-example"
#: banger's own distributions: built from this checkout and installed without an index, so a
#: same-named project on PyPI can never stand in for one of them.
OURS = [REPO, REPO / "hookspecs", *sorted(p.parent for p in (REPO / "plugins").glob("*/pyproject.toml"))]
PIP_TIMEOUT = 600


def pip_env() -> dict[str, str]:
    """The test's own environment (pip's cache and index settings), minus anything pointing into the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(
    argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def checked(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@dataclass
class Venv:
    root: Path
    wheels: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def pip(self, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
        return checked(run([self.bin / "python", "-m", "pip", *args], cwd, pip_env(), PIP_TIMEOUT))

    def python(self, code: str, cwd: Path) -> str:
        return checked(run([self.bin / "python", "-c", code], cwd, pip_env())).stdout.strip()


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    """A new venv holding banger and its builtins from this checkout's wheels, and the example's wheel beside."""
    wheels = tmp_path / "wheels"
    env = pip_env()
    checked(
        run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, *OURS, EXAMPLE],
            tmp_path,
            env,
            PIP_TIMEOUT,
        )
    )
    checked(run([sys.executable, "-m", "venv", tmp_path / "venv"], tmp_path, env))
    fresh = Venv(tmp_path / "venv", wheels)
    ours = [w for w in sorted(wheels.glob("*.whl")) if not w.name.startswith("banger_image_example-")]
    assert len(ours) == len(OURS)
    fresh.pip("install", "-q", "--no-index", "--no-deps", *ours, cwd=tmp_path)
    # Now every banger distribution is present: this fetches only the third-party dependencies.
    fresh.pip("install", "-q", wheels / "banger-0.1.0-py3-none-any.whl", cwd=tmp_path)
    fresh.pip("check", cwd=tmp_path)
    return fresh


@dataclass
class User:
    """Someone running the fresh venv's `banger` from their home directory."""

    venv: Venv
    env: dict[str, str]
    home: Path

    def banger(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run([self.venv.bin / "banger", *args], self.home, env or self.env)

    def json(self, *args: str) -> Any:
        return json.loads(checked(self.banger(*args, "--json")).stdout)

    def plugins(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.json("plugins", "list")}

    def doctor_rows(self, name: str) -> list[dict[str, Any]]:
        """``banger doctor``'s rows named ``name`` (doctor exits 1 on hosts that cannot run VMs: not our concern)."""
        done = self.banger("doctor", "--json")
        assert done.returncode in (0, 1), done.stderr
        return [row for row in json.loads(done.stdout)["checks"] if row["name"] == name]


@pytest.fixture
def user(venv: Venv, tmp_path: Path) -> Iterator[User]:
    env = isolated_env(tmp_path / "user")
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    harness = DaemonHarness(env)
    try:
        yield User(venv, env, Path(env["HOME"]))
    finally:
        harness.stop()
        shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


def daemon_pid(user: User) -> int:
    pid = DaemonHarness(user.env).pid()
    assert pid is not None, "no daemon holds the state dir"
    return pid


def stop_daemon(user: User) -> None:
    harness = DaemonHarness(user.env)
    pid = daemon_pid(user)
    os.kill(pid, signal.SIGTERM)
    assert harness.wait_gone(pid), f"daemon {pid} did not stop"


def test_pip_installed_image_source_pulls_and_uninstalls_cleanly(user: User, tmp_path: Path) -> None:
    venv = user.venv
    site = Path(venv.python("import sysconfig; print(sysconfig.get_paths()['purelib'])", user.home))
    # The banger under test is the wheel in the fresh venv, not this checkout.
    assert venv.python("import banger_core; print(banger_core.__file__)", user.home).startswith(str(site))
    assert "image-example" not in user.plugins()

    (example_wheel,) = venv.wheels.glob("banger_image_example-0.1.0-*.whl")
    venv.pip("install", example_wheel, cwd=user.home)  # what a user types; its one dependency is already here
    installed_files = venv.python(
        "from importlib import metadata; print('\\n'.join(str(f) for f in metadata.files('banger-image-example')))",
        user.home,
    ).splitlines()
    assert "banger_image_example/plugin.py" in installed_files and "banger_image_example/py.typed" in installed_files

    plugins = user.plugins()
    example = plugins["image-example"]
    assert (example["source"], example["status"], example["version"], example["dist"]) == (
        "external",
        "active",
        "0.1.0",
        "banger-image-example",
    )
    assert example["hooks"] == ["config_options", "doctor_checks", "image_sources"]
    assert plugins["debootstrap"]["source"] == "builtin"
    blocked = user.banger("plugins", "list", "--json", env={**user.env, "BANGER_DISABLE_PLUGINS": "image-example"})
    assert {r["name"]: r["status"] for r in json.loads(checked(blocked).stdout)}["image-example"] == "blocked"

    # Its config key and doctor row, through banger's own commands.
    config = Path(user.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('dir_image_headroom = "16M"\n')
    (setting,) = [s for s in user.json("config", "show")["settings"] if s["key"] == "dir_image_headroom"]
    assert (setting["value"], setting["plugin"]) == (16 << 20, "image-example")
    (mkfs_row,) = user.doctor_rows("dir-mkfs")
    assert mkfs_row["status"] == "ok" and "mkfs.ext4 1." in mkfs_row["summary"]

    # An image through the plugin, pulled by a real daemon that the CLI starts.
    tree = tmp_path / "trees" / "mybox"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("mybox\n")
    pulled = user.json("image", "pull", f"dir:{tree}")
    assert (pulled["name"], pulled["used_source"], pulled["kernel_ref"]) == ("mybox", "dir", None)
    pid = daemon_pid(user)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == str(venv.bin / "python").encode()
    (image,) = user.json("image", "list")
    assert (image["name"], image["source"], image["meta"]["origin"]) == ("mybox", "dir", f"dir:{tree}")
    assert image["meta"]["headroom"] == 16 << 20
    rootfs = Path(image["path"])
    cat = checked(run(["/usr/sbin/debugfs", "-R", "cat /etc/hostname", rootfs], user.home, user.env))
    assert cat.stdout == "mybox\n"

    # Bad references: one line from the plugin, no traceback, the store unchanged.
    (tmp_path / "trees" / "via-link").symlink_to(tree)
    for ref, problem in (
        ("dir:trees/mybox", "needs an absolute directory path"),
        (
            f"dir:{tmp_path}/trees/via-link",
            f"is not the directory's real path (a symlink, '.' or '..' on the way): use dir:{tree}",
        ),
    ):
        refused = user.banger("image", "pull", ref)
        assert refused.returncode == 1
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith(f"banger: error: image source dir failed to get {ref}: DirImageError: ")
        assert problem in last
        assert "Traceback" not in refused.stderr
    assert user.json("image", "list") == [image]

    # pip uninstall: every file of the distribution goes, and banger forgets the plugin.
    venv.pip("uninstall", "-y", "banger-image-example", cwd=user.home)
    assert [f for f in installed_files if (site / f).exists()] == []
    assert not (site / "banger_image_example").exists()
    assert "image-example" not in user.plugins()
    stop_daemon(user)  # a running daemon keeps the plugins it started with
    # The plugin's key is now unknown: banger says which line to remove instead of starting on a guess.
    stale = user.banger("image", "list")
    assert stale.returncode == 1
    (stale_line,) = stale.stderr.strip().splitlines()
    assert stale_line.endswith("unknown key 'dir_image_headroom': remove it or check its spelling")
    config.write_text("")
    assert user.json("image", "list") == [image]  # a new daemon starts; the pulled image stays, source dir
    assert daemon_pid(user) != pid
    gone = user.banger("image", "pull", f"dir:{tree}")
    assert gone.returncode == 1 and f"no image source knows 'dir:{tree}'" in gone.stderr
    assert user.doctor_rows("dir-mkfs") == []
