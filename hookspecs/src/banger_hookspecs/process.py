"""Helpers every VMM backend needs to find, signal and outlive its VMM process.

A VMM outlives the daemon that started it, so the daemon must recognize it
again from a persisted pid. A pid alone can be recycled: a process is "the
same" only if its start time (field 22 of ``/proc/PID/stat``, in clock ticks
since boot) matches too. Signals go through a pidfd opened *before* the start
time is checked, so a pid recycled between the check and the signal is never
hit.

Standard library only: plugins import this at load time.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "MAX_SOCKET_PATH",
    "ProcStat",
    "format_log_tails",
    "is_same_process",
    "read_proc_stat",
    "reap",
    "remove_stale_socket",
    "signal_process",
    "tail_lines",
    "terminate",
    "wait_gone",
]

#: Longest path a Unix socket address holds (``sun_path`` is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


class ProcStat:
    """The two fields of ``/proc/PID/stat`` a VMM backend cares about."""

    __slots__ = ("start_time", "state")

    def __init__(self, state: str, start_time: int) -> None:
        self.state = state
        self.start_time = start_time

    @property
    def zombie(self) -> bool:
        """True when the process has exited but was not reaped yet (or is exiting)."""
        return self.state in ("Z", "X", "x")


def read_proc_stat(pid: int, proc: Path = Path("/proc")) -> ProcStat | None:
    """State and start time of ``pid``, or None when no such process exists.

    Args:
        pid: process id.
        proc: procfs mount point (tests point it elsewhere).

    Returns:
        The parsed fields, or None.
    """
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # The command name (field 2) is in parentheses and may itself contain
    # spaces and parentheses: split after the *last* closing parenthesis.
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    return ProcStat(state=rest[0], start_time=int(rest[19]))


def reap(pid: int, start_time: int | None = None) -> None:
    """Collect ``pid``'s exit status if it is our exited child, so it leaves no zombie.

    With ``start_time``, only a zombie that started then is collected: a child
    that merely reuses a recycled pid (say one a ``subprocess.run`` elsewhere in
    the daemon waits for) keeps its exit status for its own waiter.
    """
    if start_time is not None:
        stat = read_proc_stat(pid)
        if stat is None or not stat.zombie or stat.start_time != start_time:
            return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_same_process(pid: int, start_time: int) -> bool:
    """True if ``pid`` is alive (not a zombie) and started at ``start_time``.

    Example:
        >>> me = read_proc_stat(os.getpid())
        >>> is_same_process(os.getpid(), me.start_time), is_same_process(os.getpid(), me.start_time + 1)
        (True, False)
    """
    stat = read_proc_stat(pid)
    if stat is not None and stat.zombie:
        reap(pid, start_time)
        return False
    return stat is not None and stat.start_time == start_time


@contextlib.contextmanager
def _pidfd(pid: int, start_time: int) -> Iterator[int | None]:
    """A pidfd for ``pid`` if that pid is still the process that started at ``start_time``."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        yield None
        return
    try:
        # Checked after opening: the fd pins this exact process from now on.
        yield fd if is_same_process(pid, start_time) else None
    finally:
        os.close(fd)


def signal_process(pid: int, start_time: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process, only if it is still the one that started at ``start_time``.

    Returns:
        True if the signal was delivered.
    """
    with _pidfd(pid, start_time) as fd:
        if fd is None:
            return False
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False
        return True


def wait_gone(pid: int, start_time: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to exit; reap it if it is our child.

    Returns:
        True if the process is gone (or was never there), False on timeout.
    """
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone already
        fd = None
    if fd is not None:
        try:
            stat = read_proc_stat(pid)
            # A zombie is waited for too: a multi-threaded process (QEMU) shows as a zombie as soon
            # as its main thread exits, but can be reaped only once its other threads are gone. The
            # pidfd (opened before this check, so it pins this exact process) turns readable then,
            # child or not.
            if stat is not None and stat.start_time == start_time:
                select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
    reap(pid, start_time)
    return not is_same_process(pid, start_time)


def terminate(pid: int, start_time: int, grace: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL if the process is still there after ``grace`` seconds.

    Returns:
        True if the process is gone afterwards.
    """
    if signal_process(pid, start_time, signal.SIGTERM) and wait_gone(pid, start_time, grace):
        return True
    if signal_process(pid, start_time, signal.SIGKILL):
        return wait_gone(pid, start_time, grace)
    return not is_same_process(pid, start_time)


def tail_lines(path: Path, lines: int = 20, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``lines`` non-empty lines of a log file (empty list if it is missing).

    Only the last ``max_bytes`` are read: a guest can write a huge serial log.
    Undecodable bytes are replaced, control characters other than tab dropped,
    because the lines end up in user-facing error messages.
    """
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    cleaned = ("".join(ch for ch in line if ch == "\t" or ch.isprintable()) for line in text.splitlines())
    kept = [line.rstrip() for line in cleaned if line.strip()]
    return kept[-lines:] if lines > 0 else []


def format_log_tails(logs: Mapping[str, str | None], lines: int = 20) -> str:
    """``TITLE (path):`` sections with each log's last lines, indented; empty logs are left out.

    Args:
        logs: title to path, in display order (``{"QEMU log": ..., "serial console": ...}``).
        lines: lines per log.

    Returns:
        The sections joined by newlines, or ``""`` when every log is empty or missing.
    """
    sections = []
    for title, path in logs.items():
        tail = tail_lines(Path(path), lines) if path else []
        if tail:
            sections.append(f"{title} ({path}):\n" + "\n".join(f"  {line}" for line in tail))
    return "\n".join(sections)


def remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a VMM that is gone; anything that is not a socket is left alone."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
