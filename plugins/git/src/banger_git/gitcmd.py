"""Running git: argv lists only, an environment that cannot redirect it, one-line errors."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path


class GitError(ValueError):
    """git refused; the message is one user sentence."""


def git_env() -> dict[str, str]:
    """The caller's environment without ``GIT_*`` variables.

    ``GIT_DIR``, ``GIT_WORK_TREE``, ``GIT_INDEX_FILE`` and friends would make
    git read another repository than the one the user pointed banger at.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env["LC_ALL"] = "C"
    return env


def git_binary() -> str:
    """The git executable, or a :class:`GitError` saying how to install it."""
    found = shutil.which("git")
    if found is None:
        raise GitError("git is not installed: install it (apt-get install git) to use workspace mode")
    return found


def run_git(cwd: Path, *args: str, what: str) -> bytes:
    """Run ``git -C cwd ARGS`` and return its stdout.

    Args:
        cwd: the directory git runs in.
        args: git's arguments (callers put ``--`` or ``--end-of-options`` before user values).
        what: what the command does, for the error message (``"listing tracked files"``).

    Returns:
        git's stdout, raw bytes (callers ask for NUL-separated output).

    Raises:
        GitError: git failed; the message names ``what`` and git's own first error line.
    """
    proc = subprocess.run(
        [git_binary(), "-C", str(cwd), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=git_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git failed while {what} in {cwd}: {first_line(proc.stderr)}")
    return proc.stdout


def first_line(output: bytes) -> str:
    """The first non-empty line of a tool's output, decoded, without git's ``fatal:`` prefix."""
    for line in output.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return "no error message"


class BlobReader:
    """A long-lived ``git cat-file --batch`` reading objects of one repository.

    One process serves every blob of a sync instead of one ``git show`` per
    file. Requests are sent one at a time and answered in order.
    """

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._proc = subprocess.Popen(
            [git_binary(), "-C", str(repo), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=git_env(),
        )

    def open(self, oid: str) -> int:
        """Ask for blob ``oid``; return its size. Read exactly that many bytes with :meth:`read`."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(oid.encode("ascii") + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise GitError(f"git object {oid} is missing from {self.repo}: run `git fsck` there")
        return int(header[2])

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the blob being read."""
        assert self._proc.stdout is not None
        return self._proc.stdout.read(size)

    def readinto(self, window: memoryview) -> int:
        """Fill ``window`` with the next bytes of the blob; return how many arrived (0 at EOF)."""
        stdout = self._proc.stdout
        assert isinstance(stdout, io.BufferedReader)
        return stdout.readinto(window)

    def finish(self) -> None:
        """Consume the newline git writes after each blob."""
        assert self._proc.stdout is not None
        self._proc.stdout.read(1)

    def blob(self, oid: str) -> bytes:
        """The whole content of a (small) blob, e.g. a symlink target."""
        size = self.open(oid)
        data = self.read(size)
        self.finish()
        return data

    def close(self) -> None:
        """Stop the ``cat-file`` process."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc.wait()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
