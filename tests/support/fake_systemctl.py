"""A ``systemctl`` stand-in that really runs banger's units, for live-install tests where PID 1 is not systemd.

Run as ``python fake_systemctl.py ARGS`` through a ``systemctl`` wrapper first on
PATH (see :func:`install`). Every call's arguments are appended, one line each,
to ``$BANGER_TEST_CALLS`` before anything is done, so a test asserts the exact
calls. The verbs banger uses act on the unit files under
``/etc/systemd/system`` the way systemd would for them:

* ``start`` / ``enable --now``: creates ``StateDirectory=``, ``CacheDirectory=``
  and ``RuntimeDirectory=`` (owned by ``User=``, with their ``*Mode=``), then runs
  ``ExecStart=`` as ``User=`` (its groups too) with ``Environment=``, ``UMask=``,
  a fresh session and the log in ``$BANGER_FAKE_SYSTEMD/UNIT.log``; the main PID
  and its start time go to ``$BANGER_FAKE_SYSTEMD/UNIT.pid``. Like ``Type=simple``,
  it returns once the process is started, not when it is ready;
* ``stop`` / ``disable --now``: SIGTERM to the main PID (only it: what
  ``KillMode=process`` does; bangerd-root has no other processes), SIGKILL after
  ``STOP_TIMEOUT``, then removes ``RuntimeDirectory=`` unless
  ``RuntimeDirectoryPreserve=yes``;
* ``restart``: stops the units in reverse order, then starts them in order (their
  ``Before=``/``After=`` order as banger lists them);
* ``is-active``: ``active``, ``inactive`` or ``failed`` (the main PID died), exit 0 / 3;
* ``daemon-reload``: nothing (units are read at each start).

It uses the standard library only: it runs under any Python 3.11.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_TIMEOUT = 30.0
#: (unit key, base directory) of the directories systemd makes for a service.
MANAGED_DIRS = (("StateDirectory", "/var/lib"), ("CacheDirectory", "/var/cache"), ("RuntimeDirectory", "/run"))

WRAPPER = """#!/bin/sh
exec {python} {module} "$@"
"""


def install(bin_dir: Path, python: str = sys.executable) -> Path:
    """Write a ``systemctl`` into ``bin_dir`` that runs this module with ``python``; returns it."""
    wrapper = bin_dir / "systemctl"
    wrapper.write_text(WRAPPER.format(python=shlex.quote(python), module=shlex.quote(str(Path(__file__).resolve()))))
    wrapper.chmod(0o755)
    return wrapper


class Unit:
    """The ``[Service]`` keys of one unit file this stand-in acts on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: dict[str, list[str]] = {}
        section = ""
        for raw in (UNIT_DIR / name).read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line:
                key, value = line.split("=", 1)
                self.keys.setdefault(key.strip(), []).append(value.strip())

    def one(self, key: str, default: str = "") -> str:
        return self.keys.get(key, [default])[-1]

    def environment(self) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
        user = self.one("User")
        if user:
            entry = pwd.getpwnam(user)
            env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user, SHELL=entry.pw_shell)
        for key, base in MANAGED_DIRS:
            if self.one(key):
                env[key.upper().replace("DIRECTORY", "_DIRECTORY")] = f"{base}/{self.one(key)}"
        for assignments in self.keys.get("Environment", []):
            for assignment in shlex.split(assignments):
                name, _, value = assignment.partition("=")
                env[name] = value
        return env


class State:
    """The main PID of each unit this stand-in started, in ``$BANGER_FAKE_SYSTEMD``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def pid_file(self, unit: str) -> Path:
        return self.directory / f"{unit}.pid"

    def main_pid(self, unit: str) -> int | None:
        """The unit's main PID while that very process (same start time) lives."""
        try:
            pid, started = map(int, self.pid_file(unit).read_text().split())
        except (OSError, ValueError):
            return None
        return pid if start_time(pid) == started else None

    def started(self, unit: str) -> bool:
        return self.pid_file(unit).exists()


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def start(unit: Unit, state: State) -> None:
    if state.main_pid(unit.name) is not None:
        return
    user = unit.one("User")
    entry = pwd.getpwnam(user) if user else None
    for key, base in MANAGED_DIRS:
        if unit.one(key):
            directory = Path(base, unit.one(key))
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(int(unit.one(f"{key}Mode", "0755"), 8))
            if entry is not None:
                os.chown(directory, entry.pw_uid, entry.pw_gid)
    with (state.directory / f"{unit.name}.log").open("ab") as log:
        process = subprocess.Popen(
            shlex.split(unit.one("ExecStart")),
            env=unit.environment(),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            umask=int(unit.one("UMask", "0022"), 8),
            user=entry.pw_uid if entry else None,
            group=entry.pw_gid if entry else None,
            extra_groups=os.getgrouplist(entry.pw_name, entry.pw_gid) if entry else None,
        )
    state.pid_file(unit.name).write_text(f"{process.pid} {start_time(process.pid)}\n")


def stop(unit: Unit, state: State) -> None:
    pid = state.main_pid(unit.name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while start_time(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if start_time(pid) is not None:
            os.kill(pid, signal.SIGKILL)
    state.pid_file(unit.name).unlink(missing_ok=True)
    runtime = unit.one("RuntimeDirectory")
    if runtime and unit.one("RuntimeDirectoryPreserve", "no") != "yes":
        shutil.rmtree(f"/run/{runtime}", ignore_errors=True)


def main(argv: list[str]) -> int:
    with open(os.environ["BANGER_TEST_CALLS"], "a") as calls:
        calls.write(" ".join(argv) + "\n")
    state = State(Path(os.environ["BANGER_FAKE_SYSTEMD"]))
    verb, args = argv[0], argv[1:]
    now = "--now" in args
    names = [name for name in args if not name.startswith("-")]
    if verb == "daemon-reload":
        return 0
    if verb == "is-active":
        words = ["active" if state.main_pid(n) else "failed" if state.started(n) else "inactive" for n in names]
        print("\n".join(words))
        return 0 if all(word == "active" for word in words) else 3
    units = [Unit(name) for name in names]
    if verb == "start" or (verb == "enable" and now):
        for unit in units:
            start(unit, state)
    elif verb == "stop" or (verb == "disable" and now):
        for unit in reversed(units):
            stop(unit, state)
    elif verb == "restart":
        for unit in reversed(units):
            stop(unit, state)
        for unit in units:
            start(unit, state)
    elif verb not in ("enable", "disable"):
        print(f"fake systemctl: {verb} is not supported by this test stand-in", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
