"""The supported host model for tests: a throw-away owner user, ``bangerd-root`` as root, ``bangerd`` as the owner.

Everything runs inside a network namespace the test creates
(:func:`tests.netns.temporary_netns`). The owner's processes are started with
``setpriv`` (its uid and gid, its groups, no capabilities) and an environment
built from nothing, so what they can do is what the real owner could.
``setpriv`` execs the owner's program itself (never through ``env`` or a
shell): the interpreter may live where only that exec can reach it.
Everything started here is stopped by pid; the user and its home are
removed with ``userdel -r`` at the end, also when the test fails.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.netns import NetNamespace, temporary_netns

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
SAFE_PATH = f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 30.0


@contextmanager
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    """A new user with its own group and a home under /var/tmp; ``userdel -r`` afterwards."""
    name = "bgt" + secrets.token_hex(4)
    home = Path("/var/tmp") / f"banger-owner-{name}"
    subprocess.run(
        ["useradd", "--create-home", "--home-dir", str(home), "--user-group", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def helper_root() -> Iterator[Path]:
    """A short directory under /tmp for the helper's files, traversable by the owner (pytest's tmp_path is not)."""
    root = Path(tempfile.mkdtemp(prefix="bgr-root-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


TUN = Path("/dev/net/tun")

#: Run as root in the command's own mount namespace (``ip netns exec`` makes one per command), then
#: exec the rest. ``$1``/``$2``: show directory ``$2`` through a tmpfs laid over its parent ``$1``
#: (both empty: skip). ``$3`` = 1: lay a mode-0666 /dev/net/tun over the host's.
_VIEW_SCRIPT = """set -e
blocked=$1 keep=$2 tun=$3; shift 3
if [ -n "$blocked" ]; then
  stash=$(mktemp -d /tmp/bgr-view-XXXXXX)
  mount --bind "$keep" "$stash"
  mount -t tmpfs -o mode=0711 tmpfs "$blocked"
  mkdir "$blocked/${keep##*/}"
  mount --bind "$stash" "$blocked/${keep##*/}"
  umount "$stash"
  rmdir "$stash"
fi
if [ "$tun" = 1 ]; then
  scratch=$(mktemp -d /tmp/bgr-tun-XXXXXX)
  mount -t tmpfs -o mode=0755 tmpfs "$scratch"
  mknod -m 0666 "$scratch/tun" c 10 200
  mount --bind "$scratch/tun" /dev/net/tun
  umount -l "$scratch"
  rmdir "$scratch"
fi
exec "$@"
"""


def owner_view() -> list[str]:
    """A prefix that gives the owner's processes what a stock host gives them, or nothing when they have it.

    Two things on the test machines differ from a user's host, and only in
    the command's private mount namespace are they changed (nothing outside
    it is touched):

    * the test venv's interpreter may live under a directory others cannot
      traverse (pyenv in /root, mode 0700), and the daemon runs it again for
      its children (log pumps): that directory is replaced by a tmpfs
      holding just the interpreter's tree;
    * /dev/net/tun may be mode 0600 (udev makes it 0666 on a stock host, and
      a tap owned by the owner is opened through it): a 0666 node of the same
      device is laid over it.
    """
    blocked = keep = ""
    real = Path(os.path.realpath(sys.executable))
    for parent in reversed(real.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            blocked, keep = str(parent), str(real.parents[len(real.parents) - len(parent.parts) - 1])
            break
    tun = "1" if TUN.stat().st_mode & 0o006 != 0o006 else "0"
    if not blocked and tun == "0":
        return []
    return ["sh", "-c", _VIEW_SCRIPT, "sh", blocked, keep, tun]


def as_user(user: pwd.struct_passwd, argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``user``: its uid, gid and groups, no capabilities of any kind."""
    return [
        *owner_view(),
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        *argv,
    ]


def process_status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a mapping (``Uid``, ``CapEff``, ...)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}


@dataclass
class RootHelper:
    """``bangerd-root`` running as root inside ``ns`` for ``owner``."""

    ns: NetNamespace
    owner: pwd.struct_passwd
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Run as root before the helper, in its private mount namespace, ending in ``exec "$@"``
    #: (e.g. to lay a fake tool over a directory of its PATH); empty: none.
    view: Sequence[str] = ()

    @property
    def socket(self) -> Path:
        return self.root / "run" / "bangerd-root.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log(self) -> Path:
        return self.root / "bangerd-root.log"

    def argv(self, *extra: str) -> list[str]:
        return [
            str(BIN / "bangerd-root"),
            f"--owner-uid={self.owner.pw_uid}",
            f"--socket={self.socket}",
            f"--install-toml={self.root / 'install.toml'}",
            f"--state-dir={self.state_dir}",
            *extra,
        ]

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = self.ns.popen([*self.view, *self.argv()], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"bangerd-root did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def revert(self) -> str:
        return self.ns.run(self.argv("--revert")).stdout

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class OwnerDaemon:
    """``bangerd`` and the ``banger`` CLI as ``owner`` inside ``ns``, talking to ``helper``."""

    ns: NetNamespace
    owner: pwd.struct_passwd
    helper: RootHelper
    runtime: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return Path(self.owner.pw_dir)

    @property
    def env(self) -> dict[str, str]:
        home = self.home
        return {
            "HOME": str(home),
            "USER": self.owner.pw_name,
            "LOGNAME": self.owner.pw_name,
            "PATH": SAFE_PATH,
            "LC_ALL": "C.UTF-8",
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "BANGER_ROOT_HELPER": str(self.helper.socket),
            **self.extra_env,
        }

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return self.ns.argv(as_user(self.owner, argv))

    @property
    def log(self) -> Path:
        return self.home / ".local/share/banger/logs/bangerd.log"

    def start(self) -> None:
        """Start bangerd in the foreground (its stderr in the runtime dir) and wait until it answers."""
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.runtime, self.owner.pw_uid, self.owner.pw_gid)
        stderr = self.runtime.parent / f"{self.runtime.name}.stderr"
        with open(stderr, "ab") as err:
            self.proc = subprocess.Popen(
                self._argv([str(BIN / "bangerd")]), stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=self.env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self.banger("daemon", "status", "--json").returncode != 0 or not self._running():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"bangerd did not start:\n{stderr.read_text()}")
            time.sleep(0.2)

    def _running(self) -> bool:
        status = self.banger("daemon", "status", "--json")
        return status.returncode == 0 and bool(json.loads(status.stdout).get("running"))

    def pid(self) -> int:
        """The daemon's own pid (``ip netns exec`` and ``setpriv`` exec into it, so it is the Popen's)."""
        assert self.proc is not None
        return self.proc.pid

    def banger(self, *args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess[str]:
        """The CLI as the owner (no auto-start: the daemon is started by :meth:`start`)."""
        result = subprocess.run(
            self._argv([str(BIN / "banger"), *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"banger {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def kill_processes_of(uid: int) -> None:
    """SIGKILL every process whose real uid is ``uid``: only ever the throw-away user's (a VMM a failed test left)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, KeyError):
                if process_status(int(entry.name))["Uid"].split()[0] == str(uid):
                    os.kill(int(entry.name), signal.SIGKILL)


def run_python_as(user: pwd.struct_passwd, ns: NetNamespace, code: str, *args: str) -> list[str]:
    """``python -c code args`` as ``user`` inside ``ns`` with the repository importable; its output lines."""
    argv = ns.argv(as_user(user, [sys.executable, "-c", code, *args]))
    env = {"PYTHONPATH": str(REPO), "LC_ALL": "C.UTF-8"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def call_helper(daemon: OwnerDaemon, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Make each HostOps call through the helper as the owner; ``ok`` or ``ExceptionType: message`` each."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from banger_core.host.rootclient import RootHelperHostOps\n"
        f"ops = RootHelperHostOps(Path({str(daemon.helper.socket)!r}))\n"
        "for method, args in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        ops.call(method, **args)\n"
        "        print('ok')\n"
        "    except Exception as exc:\n"
        "        print(f'{type(exc).__name__}: {exc}')\n"
    )
    return run_python_as(daemon.owner, daemon.ns, code, json.dumps(calls))


def raw_frames(daemon: OwnerDaemon, messages: Sequence[object]) -> list[object]:
    """Send each message as one request frame as the owner, bypassing the client's checks; the answers."""
    code = (
        "import json, socket, sys\n"
        "from banger_core.host.rootproto import recv_frame, send_frame\n"
        "for message in json.loads(sys.argv[1]):\n"
        "    with socket.socket(socket.AF_UNIX) as conn:\n"
        f"        conn.connect({str(daemon.helper.socket)!r})\n"
        "        send_frame(conn, message)\n"
        "        print(json.dumps(recv_frame(conn)[0]))\n"
    )
    return [json.loads(line) for line in run_python_as(daemon.owner, daemon.ns, code, json.dumps(messages))]


# ---------------------------------------------------------------------- fixtures (registered in conftest.py)


@pytest.fixture
def owner() -> Iterator[pwd.struct_passwd]:
    """A throw-away unprivileged user (removed afterwards, with its home)."""
    with throwaway_user() as user:
        yield user


@pytest.fixture
def helper_ns() -> Iterator[NetNamespace]:
    """The network namespace the helper, the daemon and the guests live in."""
    with temporary_netns() as namespace:
        yield namespace


@pytest.fixture
def root_helper(helper_ns: NetNamespace, owner: pwd.struct_passwd) -> Iterator[RootHelper]:
    """``bangerd-root`` as root for ``owner`` in ``helper_ns`` (install.toml absent: banger's defaults)."""
    with helper_root() as root:
        running = RootHelper(helper_ns, owner, root)
        try:
            running.start()
            yield running
        finally:
            running.stop()


@pytest.fixture
def owner_daemon(helper_ns: NetNamespace, owner: pwd.struct_passwd, root_helper: RootHelper) -> Iterator[OwnerDaemon]:
    """``bangerd`` as ``owner`` (not started yet: call ``start``); stopped, and every process of the owner killed."""
    runtime = Path("/tmp") / f"bgr-{owner.pw_name}"
    running = OwnerDaemon(helper_ns, owner, root_helper, runtime)
    try:
        yield running
    finally:
        running.stop()
        with suppress(OSError):  # shown by pytest when the test failed
            print(f"--- bangerd.log of {owner.pw_name}:\n" + "\n".join(running.log.read_text().splitlines()[-60:]))
        kill_processes_of(owner.pw_uid)
        shutil.rmtree(runtime, ignore_errors=True)
        Path(f"{runtime}.stderr").unlink(missing_ok=True)
