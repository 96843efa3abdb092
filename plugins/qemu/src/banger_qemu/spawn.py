"""Starting the backend's long-lived processes (QEMU, passt) the same way."""

from __future__ import annotations

import subprocess
from pathlib import Path


def spawn_detached(
    argv: list[str], log_path: Path, cwd: Path, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (it survives the daemon and its terminal's signals), output to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=cwd,
            umask=0o077,
            pass_fds=pass_fds,
        )
