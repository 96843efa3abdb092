"""One bangerd per state directory: the lock it holds for its whole life, and how others find it.

The daemon takes an exclusive ``flock`` on ``<state_dir>/bangerd.lock`` (and
one on ``<runtime_dir>/bangerd.lock``, so two state dirs never share a socket)
and never releases it: the kernel drops it when the process is gone, not
before, so a daemon that is wedged or still finishing threads keeps its state
dir to itself. The file names the holder: pid and process start time
(together never reused, unlike a bare pid), socket and state dir, so the CLI
can tell a daemon that listens elsewhere from a wedged one, and ``banger
daemon stop`` can signal exactly that process.

Light imports only: the CLI uses this when no daemon answers.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from banger_hookspecs.process import is_same_process, read_proc_stat

LOCK_NAME = "bangerd.lock"
#: How long a starting daemon retries the lock: a CLI probing it (:func:`lock_holder`) holds it for microseconds.
ACQUIRE_PATIENCE = 1.0


@dataclass(frozen=True)
class Holder:
    """The daemon holding a lock, as it described itself (fields are None if it had not written yet)."""

    pid: int | None
    start_time: int | None
    socket: Path | None
    state_dir: Path | None

    @property
    def who(self) -> str:
        return f"bangerd (pid {self.pid if self.pid is not None else 'unknown'})"

    def live_identity(self) -> tuple[int, int] | None:
        """``(pid, start_time)`` if the recorded process still runs; a pid alone may have been reused."""
        if self.pid is None or self.start_time is None or not is_same_process(self.pid, self.start_time):
            return None
        return self.pid, self.start_time


class AlreadyHeld(Exception):
    """The lock is held by another process, described by ``holder``."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(holder.who)
        self.holder = holder


def _parse(content: bytes) -> Holder:
    try:
        data = json.loads(content)
        pid, start_time = int(data["pid"]), int(data["start_time"])
        socket, state_dir = Path(data["socket"]), Path(data["state_dir"])
    except (ValueError, KeyError, TypeError):
        # Still being written, or written by an older bangerd (a bare pid).
        first = content.split(maxsplit=1)[:1]
        return Holder(int(first[0]) if first and first[0].isdigit() else None, None, None, None)
    return Holder(pid, start_time, socket, state_dir)


def lock_holder(path: Path) -> Holder | None:
    """Who holds the daemon lock at ``path``, or None when no live process does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _parse(os.pread(fd, 4096, 0))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def hold_for_life(path: Path, socket: Path, state_dir: Path) -> None:
    """Take the lock at ``path`` for the rest of this process's life and describe ourselves in it.

    The descriptor is deliberately never closed (and, like every descriptor
    Python opens, not inherited by the VMMs we start): only our exit frees it.

    Raises:
        AlreadyHeld: another live process holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + ACQUIRE_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _parse(os.pread(fd, 4096, 0))
                os.close(fd)
                raise AlreadyHeld(holder) from None
            time.sleep(0.05)
    me = read_proc_stat(os.getpid())
    assert me is not None  # we are alive
    record = {"pid": os.getpid(), "start_time": me.start_time, "socket": str(socket), "state_dir": str(state_dir)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
