"""``banger update`` end to end, on a live install, without touching the host.

Three releases of this checkout are cut with ``scripts/release`` and signed by
the test's own Sigstore trust root (:class:`~banger_core.testing.sigstore_lab.TrustLab`):
v0.1.0, a broken v0.2.0 (it also carries ``banger-faildoctor-testplugin``, whose
doctor check always fails) and v0.3.0. Each carries ``banger-fake-testplugin``
(tests/support/dists), so the installed daemon can run a VM whose process
outlives a daemon restart.

Like tests/integration/test_system_live.py, banger runs in private mount and
network namespaces: ``/etc``, ``/opt`` and ``/var`` are overlays on a tmpfs (the
host's directories stay as they are), ``/run`` is a fresh tmpfs with
``/run/systemd/system``, and ``lo`` is up for the release server, a real HTTP
server on 127.0.0.1 in that network namespace. systemd itself cannot run here:
``systemctl`` is tests/support/fake_systemctl.py, which records every call and
really starts and stops the two units as their files say (bangerd as the
unprivileged owner ``daemon``, bangerd-root as root). Everything else is real:
the offline install of v0.1.0 with ``banger system install --wheels``, the
installed daemons, the downloads, the Sigstore verification, the new virtualenvs,
the swap, the doctor run and the rollback.

The story: install v0.1.0 and start a VM; ``banger update`` finds v0.2.0, swaps,
its doctor fails: rolled back to v0.1.0 with that error in one line; v0.3.0 is
published; ``banger update`` swaps to it; ``banger update --rollback`` goes back
to v0.1.0. The VM's process runs through all of it and each new daemon adopts it.
Every process started in the namespaces is killed by PID at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fake_systemctl

REPO = Path(__file__).resolve().parents[2]
#: The checkout's CLI: what installs the first release (as ``banger system install --wheels`` from a checkout).
CHECKOUT_BANGER = str(Path(sys.executable).parent / "banger")
#: The installed CLI: what the user runs once banger is installed (its update replaces it).
INSTALLED_BANGER = "/opt/banger/current/bin/banger"
RELEASE_SCRIPT = REPO / "scripts" / "release"
FAKE_PLUGIN = REPO / "tests" / "support" / "dists" / "fake-testplugin"
FAILDOCTOR_PLUGIN = REPO / "tests" / "support" / "dists" / "faildoctor-testplugin"
#: The release server's port, in the test's own network namespace (nothing else listens there).
PORT = 8731
STEP_TIMEOUT = 300

#: Runs as the namespaces' first process: the private mounts, then "ready", then it waits for stdin to close.
SETUP = r"""
set -eu
mount -t tmpfs banger-test "$T/up"
for d in etc opt var root; do
  mkdir "$T/up/$d" "$T/up/$d.work"
  mount -t overlay banger-test -o "lowerdir=/$d,upperdir=$T/up/$d,workdir=$T/up/$d.work" "/$d"
done
# The venvs' interpreter may live under /root (pyenv on the lab machines); bangerd runs as another user.
chmod 0711 /root
mount -t tmpfs banger-test /run
mkdir -p /run/systemd/system
ip link set lo up
echo ready
read -r _ || true
"""


class Namespaces:
    """Private mount and network namespaces, held by one process; commands enter them with ``nsenter``."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        (tmp / "up").mkdir()
        self.env = env
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", SETUP],
            env={**env, "T": str(tmp)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        ready, _, _ = select.select([self.holder.stdout], [], [], 30)
        assert ready and self.holder.stdout.readline() == "ready\n", "the namespaces were not set up"
        self.mount_ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")

    def run(self, *argv: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *argv: str, stdout: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--", *argv],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )

    def members(self) -> list[int]:
        """Every process in these namespaces but the holder: only ever ones this test started."""
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != self.holder.pid:
                try:
                    if os.readlink(proc / "ns" / "mnt") == self.mount_ns:
                        found.append(int(proc.name))
                except OSError:
                    continue  # gone meanwhile
        return found

    def close(self) -> None:
        """Kill every process left in the namespaces (by PID), then let the holder go: the mounts vanish."""
        for _ in range(50):
            members = self.members()
            if not members:
                break
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        assert self.holder.stdin is not None
        self.holder.stdin.close()
        self.holder.wait(timeout=30)


def dependency_cache() -> Path:
    """Where the releases' dependency wheels are kept between runs: keyed by every pyproject.toml and the Python."""
    digest = hashlib.sha256(f"{sys.version_info[:2]} {sys.platform}".encode())
    projects = [REPO, REPO / "hookspecs", *(p.parent for p in REPO.glob("plugins/*/pyproject.toml"))]
    for project in sorted([*projects, FAKE_PLUGIN, FAILDOCTOR_PLUGIN]):
        digest.update(str(project.relative_to(REPO)).encode() + b"\0" + (project / "pyproject.toml").read_bytes())
    cache = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache"))
    return cache / f"release-deps-{digest.hexdigest()[:16]}"


class Releases:
    """Releases cut with scripts/release into one release root, signed by the test's trust root."""

    def __init__(self, root: Path, lab: TrustLab) -> None:
        self.root = root
        self.lab = lab
        self.deps = dependency_cache()

    def cut(self, version: str, *extra_dists: Path) -> Path:
        argv = [sys.executable, str(RELEASE_SCRIPT), "--version", version, "--out", str(self.root)]
        argv += ["--sign-with", "none", "--allow-dirty", "--no-build-isolation"]
        for dist in extra_dists:
            argv += ["--extra-dist", str(dist)]
        cached = self.deps.is_dir()
        if cached:
            argv += ["--find-links", str(self.deps), "--no-index"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"released {version} (commit ")
        release = self.root / version
        self.lab.sign_file(release / "manifest.json")
        if not cached:
            self._keep_dependencies(release / f"banger-{version}-wheelhouse.tar")
        return release

    def _keep_dependencies(self, tar_path: Path) -> None:
        """The wheelhouse's non-banger wheels into the cache (renamed in whole: never half there)."""
        scratch = self.deps.with_name(f".{self.deps.name}.{os.getpid()}")
        scratch.mkdir(parents=True)
        with tarfile.open(tar_path) as tar:
            wheels = [m for m in tar.getmembers() if not m.name.startswith("banger")]
            tar.extractall(scratch, members=wheels, filter="data")
        try:
            scratch.rename(self.deps)
        except OSError:  # another run filled it first
            shutil.rmtree(scratch)


class Install:
    """The live install inside the namespaces, driven as root through the installed CLI."""

    def __init__(self, ns: Namespaces, state: Path) -> None:
        self.ns = ns
        self.state = state  # the fake systemctl's PID files and service logs

    def banger(self, *args: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self.ns.run(INSTALLED_BANGER, *args, timeout=timeout)

    def read(self, path: str) -> str:
        done = self.ns.run("cat", path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def current(self) -> str:
        done = self.ns.run("readlink", "/opt/banger/current")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def main_pid(self, unit: str) -> int | None:
        return fake_systemctl.State(self.state).main_pid(unit)

    def wait_daemon(self, version: str) -> None:
        """Until the installed daemon answers, as ``version`` (Type=simple: started is not ready)."""
        deadline = time.monotonic() + 60
        while True:
            done = self.banger("version")
            if done.returncode == 0 and f"daemon:  {version} (" in done.stdout:
                return
            assert time.monotonic() < deadline, f"no daemon {version} answers: {done.stdout}{done.stderr}{self.logs()}"
            time.sleep(0.5)

    def vm(self, name: str) -> dict[str, object]:
        done = self.banger("vm", "show", name, "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def logs(self) -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.state.glob("*.log")))
