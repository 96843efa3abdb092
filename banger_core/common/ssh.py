"""banger's ssh identity, its known_hosts, and running commands in guests.

Every VM's ed25519 host key is generated on the host before its first boot and
pinned in banger's own known_hosts under the alias ``<name>.vm``; ssh is always
called with ``HostKeyAlias=<name>.vm`` and ``StrictHostKeyChecking=yes``, so
the guest is authenticated whatever address or forwarded port reaches it.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from banger_core.common.errors import BangerError
from banger_hookspecs import GuestResult

SSH_USER = "root"
#: Seconds an idle shared connection stays up.
CONTROL_PERSIST = 120


@dataclass(frozen=True)
class SshTarget:
    """How to reach one VM's sshd. JSON-able: the daemon hands it to the CLI."""

    name: str
    host: str
    port: int
    key: str
    known_hosts: str
    user: str = SSH_USER
    #: Shared connection socket: the daemon's readiness probe leaves a master
    #: connection that later commands reuse (an ssh handshake costs 0.6-0.8 s
    #: under software emulation).
    control_path: str | None = None

    @property
    def alias(self) -> str:
        return f"{self.name}.vm"

    def argv(self, *, tty: bool = False, batch: bool = True, connect_timeout: int = 10) -> list[str]:
        """``ssh`` argv up to (not including) the remote command."""
        argv = [
            "ssh",
            "-i",
            self.key,
            "-p",
            str(self.port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            f"HostKeyAlias={self.alias}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            f"ConnectTimeout={connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            # Prefer plain curve25519 over OpenSSH 9's post-quantum hybrid default:
            # ~0.2 s less per connection under software emulation, still modern.
            "-o",
            "KexAlgorithms=^curve25519-sha256",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.control_path:
            argv += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={self.control_path}",
                "-o",
                f"ControlPersist={CONTROL_PERSIST}",
            ]
        if batch:
            argv += ["-o", "BatchMode=yes"]
        argv.append("-t" if tty else "-T")
        argv.append(f"{self.user}@{self.host}")
        return argv

    def command_argv(self, command: Sequence[str], *, tty: bool = False) -> list[str]:
        """ssh argv running ``command`` (an argv list, quoted for the remote shell)."""
        argv = self.argv(tty=tty)
        if command:
            argv += ["--", shlex.join(command)]
        return argv


class SshKeys:
    """banger's client key pair and known_hosts file under ``state_dir/ssh``.

    ``key`` (config ``ssh_key_path``) is a private key to use instead of
    banger's own; its public half is ``<key>.pub``.
    """

    def __init__(self, directory: Path, key: Path | None = None) -> None:
        self.directory = directory
        self.key = key or directory / "id_ed25519"
        self.public_key_file = self.key.with_name(self.key.name + ".pub")
        self.known_hosts = directory / "known_hosts"
        self._lock = directory / ".known_hosts.lock"

    def ensure(self) -> None:
        """Create the key pair once (0600 in a 0700 dir); an existing key needs its ``.pub`` beside it."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.key.exists() and not (self.key.is_file() and self.public_key_file.is_file()):
            problem = "is not a file" if not self.key.is_file() else f"has no public key {self.public_key_file}"
            raise BangerError(
                f"ssh key {self.key} {problem}: point ssh_key_path in config.toml at a private key "
                f"with its .pub beside it (`ssh-keygen -y -f KEY > KEY.pub` makes one), or unset it"
            )
        if not self.key.exists():
            self.key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.key.parent, prefix=".keygen-"))
            try:
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banger", "-f", str(tmp / "key")],
                    check=True,
                    capture_output=True,
                )
                os.replace(tmp / "key.pub", self.public_key_file)
                os.replace(tmp / "key", self.key)
            finally:
                for leftover in tmp.iterdir():
                    leftover.unlink()
                tmp.rmdir()
        self.known_hosts.touch(mode=0o600, exist_ok=True)

    def public_key(self) -> str:
        return self.public_key_file.read_text().strip()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def pin(self, alias: str, public_key: str) -> None:
        """Record ``alias``'s host key, replacing any older entry for it."""
        fields = public_key.split()
        if len(fields) < 2:
            raise BangerError(f"malformed host key for {alias}")
        line = f"{alias} {fields[0]} {fields[1]}\n"
        with self._locked():
            self._rewrite(lambda lines: [ln for ln in lines if ln.split(" ", 1)[0] != alias] + [line])

    def unpin(self, alias: str) -> None:
        with self._locked():
            self._rewrite(lambda lines: [ln for ln in lines if ln.split(" ", 1)[0] != alias])

    def _rewrite(self, change: Callable[[list[str]], list[str]]) -> None:
        try:
            lines = self.known_hosts.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            lines = []
        new = change(lines)
        tmp = self.known_hosts.with_name(self.known_hosts.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(new)
        os.replace(tmp, self.known_hosts)


def banner_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True once something at host:port speaks SSH (a bare connect is not enough:
    QEMU's user-mode forward accepts connections before the guest exists)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


class SshGuestShell:
    """:class:`banger_hookspecs.GuestShell` over ssh."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | IO[bytes] | None = None,
        timeout: float | None = None,
        stdout: IO[bytes] | None = None,
    ) -> GuestResult:
        full = self.target.command_argv(list(argv))
        if stdout is None and (stdin is None or isinstance(stdin, bytes)):
            done = subprocess.run(full, input=stdin or b"", capture_output=True, timeout=timeout)
            return GuestResult(done.returncode, done.stdout, done.stderr)
        feed = subprocess.PIPE if stdin is None or isinstance(stdin, bytes) else stdin
        with subprocess.Popen(
            full, stdin=feed, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            out, err = proc.communicate(input=stdin if isinstance(stdin, bytes) else None, timeout=timeout)
            return GuestResult(proc.returncode, out or b"", err)


def close_master(control_path: str | Path) -> None:
    """Stop the shared connection at ``control_path`` if one runs (before its VM goes away)."""
    if not Path(control_path).exists():
        return
    subprocess.run(
        ["ssh", "-o", f"ControlPath={control_path}", "-O", "exit", "banger-vm"],
        capture_output=True,
        timeout=10,
        check=False,
    )
