"""A size-capped console log for a VMM: a tiny pump process between the VMM and the file.

A VMM writing its serial console straight into a file (QEMU's ``-chardev
file``, Firecracker's stdout) grows it for as long as the guest prints, and
neither can cap or rotate it. So the VMM writes into a pipe instead, and a
pump process copies the pipe into ``PATH``; when ``PATH`` would pass
``max_bytes`` it becomes ``PATH.1`` (replacing an older one) and a new ``PATH``
starts. On disk: at most ``2 * max_bytes``.

The pump is a separate process, not a daemon thread, because a VM outlives
the daemon that started it: the pump detaches (double fork, own session), so
it keeps capping across daemon restarts and is never the daemon's child (no
zombie to collect). It exits when the VMM closes the pipe (the VMM exited).
If the pump is killed, the VMM's console writes fail and are dropped (VMMs
ignore SIGPIPE): the guest keeps running, only its console log stops.

Standard library only: plugins import this at load time.

Example (a VMM backend's launch)::

    serial_fd = start_log_pump(spec.serial_log)
    try:
        popen = subprocess.Popen(argv, stdout=serial_fd, ...)  # Firecracker: console on stdout
    finally:
        os.close(serial_fd)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["SERIAL_LOG_MAX_BYTES", "pump", "rotated", "start_log_pump", "start_log_pump_from"]

#: Cap of one serial log file; with the rotated copy a VM's console takes at most twice this.
SERIAL_LOG_MAX_BYTES = 4 << 20
CHUNK = 64 * 1024


def rotated(path: Path) -> Path:
    """Where ``path``'s previous part goes when it is full: ``serial.log`` -> ``serial.log.1``."""
    return path.with_name(path.name + ".1")


def pump(source: int, path: Path, max_bytes: int) -> None:
    """Copy ``source`` (a readable fd) into ``path`` until EOF, rotating at ``max_bytes``.

    Args:
        source: file descriptor to read (the read end of the VMM's console pipe).
        path: the log file (appended to: the caller truncates it at boot).
        max_bytes: size at which ``path`` is rotated to ``path.1``.
    """
    out = _open_log(path)
    try:
        size = os.fstat(out).st_size
        while True:
            data = os.read(source, CHUNK)
            if not data:
                return
            while data:
                if size >= max_bytes:
                    os.close(out)
                    os.replace(path, rotated(path))
                    out = _open_log(path)
                    size = 0
                piece, data = data[: max_bytes - size], data[max_bytes - size :]
                try:
                    size += os.write(out, piece)
                except OSError:
                    # Disk full (or the like): this output is dropped, but the pipe keeps
                    # being drained so the VMM never blocks on its console.
                    continue
    finally:
        os.close(out)


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def start_log_pump(path: Path, max_bytes: int = SERIAL_LOG_MAX_BYTES) -> int:
    """Start a detached pump into ``path``; return the pipe's write end for the VMM.

    The caller passes the returned fd to the VMM (as stdout or via
    ``pass_fds``) and closes its own copy once the VMM is started.
    """
    read_end, write_end = os.pipe()
    try:
        start_log_pump_from(read_end, path, max_bytes)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return write_end


def start_log_pump_from(source: int, path: Path, max_bytes: int = SERIAL_LOG_MAX_BYTES) -> None:
    """Start a detached pump copying ``source`` (a blocking readable fd: pipe or FIFO) into ``path``.

    For a VMM whose console was opened by someone else (a root helper writing
    into a FIFO the caller reads). The caller closes its ``source`` afterwards.
    """
    launcher = subprocess.Popen(
        [sys.executable, "-m", "banger_hookspecs.logpump", "--max-bytes", str(max_bytes), str(path)],
        stdin=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    launcher.wait()  # the launcher only forks the pump and exits: nothing is left to reap
    if launcher.returncode != 0:
        raise OSError(f"the console log pump for {path} failed to start (exit status {launcher.returncode})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="banger-logpump", description="copy stdin into a size-capped log file")
    parser.add_argument("--max-bytes", type=int, default=SERIAL_LOG_MAX_BYTES)
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.max_bytes <= 0:
        parser.error("--max-bytes must be positive")
    if os.fork() > 0:
        os._exit(0)  # the launcher: its parent waits for it; the pump below is adopted by init
    pump(sys.stdin.fileno(), args.path, args.max_bytes)


if __name__ == "__main__":
    main()
