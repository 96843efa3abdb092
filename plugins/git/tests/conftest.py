"""Fixtures for the git syncer tests: real repositories in tmp_path and a real local guest shell.

Test modules run under ``--import-mode=importlib`` and cannot import this
file, so helpers are handed out as fixtures.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from banger_hookspecs import GuestResult


@dataclass
class LocalShell:
    """A real :class:`~banger_hookspecs.GuestShell` that runs argv here, inside ``sandbox``.

    It is the guest side of the pipeline minus ssh: the same ``sh``, ``tar``,
    ``find``, ``head`` and ``xargs`` a Debian guest has, reading the same
    stdin stream. Calls are recorded so tests can count round trips; ``path``
    replaces ``$PATH`` (to hide GNU find, for instance).
    """

    sandbox: Path
    path: str | None = None
    calls: list[list[str]] = field(default_factory=list)
    #: extra environment, e.g. a git identity for commits made "in the guest".
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | IO[bytes] | None = None,
        timeout: float | None = None,
        stdout: IO[bytes] | None = None,
    ) -> GuestResult:
        self.calls.append(list(argv))
        env = {**os.environ, **self.env}
        if self.path is not None:
            env["PATH"] = self.path
        return run_command(list(argv), stdin, stdout, cwd=self.sandbox, env=env)


def run_command(
    argv: list[str], stdin: bytes | IO[bytes] | None, stdout: IO[bytes] | None, **kwargs: Any
) -> GuestResult:
    """subprocess.run the way a GuestShell runs a command: stdin bytes or stream, stdout captured or redirected."""
    feed: dict[str, Any] = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
    proc = subprocess.run(
        argv,
        **feed,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
        **kwargs,
    )
    return GuestResult(proc.returncode, proc.stdout or b"", proc.stderr)


@pytest.fixture
def shell(tmp_path: Path) -> LocalShell:
    """A guest shell whose filesystem view starts in ``tmp_path/guest``."""
    sandbox = tmp_path / "guest"
    sandbox.mkdir()
    return LocalShell(sandbox)


def _git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    if date is not None:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env=env, check=False)
    if proc.returncode:
        raise AssertionError(f"git {args} failed: {proc.stderr.decode()}")
    return proc.stdout.decode("utf-8", "surrogateescape")


@pytest.fixture
def git() -> Callable[..., str]:
    """``git(repo, *args, date=None)``: run git in ``repo`` with a fixed identity and no user config."""
    return _git


def write_files(root: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)


@pytest.fixture
def make_repo() -> Callable[[Path, dict[str, bytes | str]], Path]:
    """``make_repo(path, files)``: a fresh repository with ``files`` committed on branch ``main``."""

    def make(path: Path, files: dict[str, bytes | str]) -> Path:
        path.mkdir(parents=True)
        _git(path, "init", "-q", "-b", "main")
        write_files(path, files)
        _git(path, "add", "-A")
        _git(path, "commit", "-q", "-m", "initial")
        return path

    return make


@pytest.fixture
def write() -> Callable[[Path, dict[str, bytes | str]], None]:
    """``write(root, files)``: write ``files`` (relative name -> content) under ``root``."""
    return write_files


Snapshot = dict[str, tuple[str, int, bytes]]


def snapshot(root: Path) -> Snapshot:
    """Every file and symlink under ``root``: kind, permission bits, content or link target."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("l", 0o777, os.fsencode(os.readlink(full)))
            else:
                with open(full, "rb") as fh:
                    found[rel] = ("f", stat.S_IMODE(st.st_mode), fh.read())
    return found


@pytest.fixture
def tree() -> Callable[[Path], Snapshot]:
    """``tree(root)``: a snapshot of the files under ``root`` for equality checks."""
    return snapshot


@dataclass
class SshShell:
    """A GuestShell over real ssh to a private sshd on 127.0.0.1, quoting argv with shlex like the core does.

    Commands start in ``home`` (a guest's commands start in the guest user's
    home; this host's real one is not the test's to write in).
    """

    prefix: list[str]
    home: Path

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | IO[bytes] | None = None,
        timeout: float | None = None,
        stdout: IO[bytes] | None = None,
    ) -> GuestResult:
        command = f"cd {shlex.quote(str(self.home))} && " + " ".join(shlex.quote(a) for a in argv)
        return run_command([*self.prefix, command], stdin, stdout)


@pytest.fixture
def ssh_shell(tmp_path: Path) -> Iterator[SshShell]:
    """A real sshd on 127.0.0.1 (throw-away keys, root login by key) and a shell that reaches it."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if os.geteuid() != 0 or not os.path.exists(sshd):
        pytest.skip("needs root and openssh-server's sshd to run a private sshd on 127.0.0.1")
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = keys / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {keys / 'host'}\nAuthorizedKeysFile {keys / 'user.pub'}\n"
        f"PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\n"
        f"PidFile {keys / 'sshd.pid'}\n"
    )
    privsep = Path("/run/sshd")  # sshd insists on its privilege separation directory
    made_privsep = not privsep.exists()
    if made_privsep:
        privsep.mkdir(mode=0o755)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    prefix = ["ssh", "-q", "-i", str(keys / "user"), "-p", str(port), "-o", "BatchMode=yes"]
    prefix += ["-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}", "root@127.0.0.1"]
    try:
        for _ in range(100):
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=30, check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the private sshd never accepted a login")
        home = tmp_path / "ssh-home"
        home.mkdir()
        yield SshShell(prefix, home)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if made_privsep:
            shutil.rmtree(privsep, ignore_errors=True)
