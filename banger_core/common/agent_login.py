"""The environment an ssh login gives a command, so ``vm run`` can run it through the guest agent alike.

A warm template records it once, over ssh, right before its pause (``template.json``): every VM
restored from the template resumes that very guest, so an ssh login to it gets the same environment
(sshd's own variables, PAM's ``/etc/environment``, the shell's startup files), apart from what is
per connection (:data:`PER_CONNECTION`). Two things come from the ssh client, not the guest: the
variables its ``SendEnv``/``SetEnv`` send, which the guest's sshd takes when its ``AcceptEnv`` lets
them in. The template records that ``AcceptEnv`` list; :func:`command_environment` applies both.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from banger_core.common.errors import OperationFailed
from banger_core.common.ssh import SshTarget

#: In a VM's state dir: the login environment of the template it was restored from.
LOGIN_FILE = "login.json"
#: Set for each ssh connection, or by the login shell itself as it starts: never recorded, never replayed.
PER_CONNECTION = frozenset(
    {
        "SSH_CLIENT",
        "SSH_CONNECTION",
        "SSH_TTY",
        "SSH_AUTH_SOCK",
        "SSH_ORIGINAL_COMMAND",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "XDG_SESSION_ID",
        "XDG_SESSION_TYPE",
        "XDG_SESSION_CLASS",
        "XDG_RUNTIME_DIR",
    }
)
#: What a recording may be at most (the guest is not trusted with the host's memory).
MAX_RECORD_BYTES = 256 << 10
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MARKER = b"\n--banger-accept-env--\n"
_LIMITS_MARKER = b"\n--banger-limits--\n"
#: The login's environment, its resource limits (PAM's pam_limits, sshd's own: not what a service gets),
#: then the AcceptEnv patterns of the sshd that served it (`sshd -T`, as root).
PROBE = (
    "env -0; printf '\\n--banger-limits--\\n'; cat /proc/self/limits; "
    "printf '\\n--banger-accept-env--\\n'; sshd -T 2>/dev/null | grep -i '^acceptenv '"
)
#: ``/proc/self/limits`` rows and the ``resource`` constants they are.
LIMIT_ROWS = {
    "Max cpu time": "RLIMIT_CPU",
    "Max file size": "RLIMIT_FSIZE",
    "Max data size": "RLIMIT_DATA",
    "Max stack size": "RLIMIT_STACK",
    "Max core file size": "RLIMIT_CORE",
    "Max resident set": "RLIMIT_RSS",
    "Max processes": "RLIMIT_NPROC",
    "Max open files": "RLIMIT_NOFILE",
    "Max locked memory": "RLIMIT_MEMLOCK",
    "Max address space": "RLIMIT_AS",
    "Max file locks": "RLIMIT_LOCKS",
    "Max pending signals": "RLIMIT_SIGPENDING",
    "Max msgqueue size": "RLIMIT_MSGQUEUE",
    "Max nice priority": "RLIMIT_NICE",
    "Max realtime priority": "RLIMIT_RTPRIO",
    "Max realtime timeout": "RLIMIT_RTTIME",
}


@dataclass(frozen=True)
class LoginEnvironment:
    """What an ssh login to the guest puts in a command's environment, before the client's variables."""

    env: dict[str, str] = field(default_factory=dict)
    #: The guest sshd's ``AcceptEnv`` patterns: which client-sent variables it lets in.
    accept_env: tuple[str, ...] = ()
    #: The login's resource limits: ``RLIMIT_*`` name -> [soft, hard], -1 for unlimited.
    limits: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"env": self.env, "accept_env": list(self.accept_env), "limits": self.limits}

    @classmethod
    def from_json(cls, value: object) -> LoginEnvironment:
        """Parse a recorded login environment; ValueError when it is not one."""
        if not isinstance(value, dict):
            raise ValueError("login environment is not an object")
        env, accept = value.get("env"), value.get("accept_env")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and _NAME.match(k) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError("login environment: env is not a map of variable names to strings")
        if not isinstance(accept, list) or not all(isinstance(p, str) for p in accept):
            raise ValueError("login environment: accept_env is not a list of patterns")
        limits = value.get("limits", {})
        if not isinstance(limits, dict) or not all(
            name in LIMIT_ROWS.values()
            and isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            for name, pair in limits.items()
        ):
            raise ValueError("login environment: limits is not a map of RLIMIT names to [soft, hard]")
        return cls(dict(env), tuple(accept), {name: list(pair) for name, pair in limits.items()})

    def save(self, vm_dir: Path) -> None:
        (vm_dir / LOGIN_FILE).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, vm_dir: Path) -> LoginEnvironment | None:
        """The VM's recorded login environment; None when it has none (a cold VM, an older template)."""
        try:
            return cls.from_json(json.loads((vm_dir / LOGIN_FILE).read_text()))
        except FileNotFoundError:
            return None


def parse_record(output: bytes) -> LoginEnvironment:
    """:data:`PROBE`'s output: NUL-separated ``NAME=value`` entries, ``/proc/self/limits``, ``acceptenv`` lines."""
    if len(output) > MAX_RECORD_BYTES:
        raise ValueError(f"the login environment is over {MAX_RECORD_BYTES} bytes")
    head, marker, accept_lines = output.rpartition(_MARKER)
    entries, limits_marker, limits_text = head.rpartition(_LIMITS_MARKER)
    if not marker or not limits_marker:
        raise ValueError("the login environment probe printed no limits or AcceptEnv marker")
    env: dict[str, str] = {}
    for entry in entries.split(b"\0"):
        if not entry:
            continue
        name, sep, value = entry.decode("utf-8", "surrogateescape").partition("=")
        if not sep or not _NAME.match(name):
            raise ValueError(f"the login environment has a malformed entry {entry[:60]!r}")
        if name not in PER_CONNECTION:
            env[name] = value
    accept: list[str] = []
    for line in accept_lines.decode("utf-8", "replace").splitlines():
        words = line.split()
        if words and words[0].lower() == "acceptenv":
            accept.extend(words[1:])
    return LoginEnvironment(env, tuple(accept), _parse_limits(limits_text.decode("utf-8", "replace")))


def _parse_limits(text: str) -> dict[str, list[int]]:
    limits: dict[str, list[int]] = {}
    for line in text.splitlines():
        for row, name in LIMIT_ROWS.items():
            if line.startswith(row + " "):
                values = line[len(row) :].split()[:2]
                try:
                    limits[name] = [-1 if v == "unlimited" else int(v) for v in values]
                except ValueError:
                    raise ValueError(f"the login environment's limits have a malformed row {line!r}") from None
                if len(limits[name]) != 2:
                    raise ValueError(f"the login environment's limits have a malformed row {line!r}")
    return limits


def record(target: SshTarget, timeout: float = 60.0) -> LoginEnvironment:
    """Log in to ``target`` and record the environment a command gets there.

    The ssh client runs with nothing but ``PATH`` in its own environment, so it sends no variable:
    what is recorded is the guest's part alone.
    """
    argv = target.command_argv(["sh", "-c", PROBE])
    result = subprocess.run(
        argv,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise OperationFailed(f"recording the ssh login environment failed: {result.stderr.decode(errors='replace')}")
    try:
        return parse_record(result.stdout)
    except ValueError as exc:
        raise OperationFailed(f"recording the ssh login environment: {exc}") from None


def client_sent(ssh_config: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables an ssh client with effective config ``ssh_config`` (``ssh -G``) sends from ``environ``.

    ``SendEnv`` patterns pick variables of ``environ`` (a ``-PATTERN`` removes earlier matches, as
    in OpenSSH); ``SetEnv NAME=VALUE`` entries are sent as they are and win.
    """
    send: list[str] = []
    set_env: dict[str, str] = {}
    for line in ssh_config.splitlines():
        words = line.split(maxsplit=1)
        if len(words) != 2:
            continue
        key, value = words[0].lower(), words[1]
        if key == "sendenv":
            send.extend(value.split())
        elif key == "setenv":
            for item in value.split():
                name, sep, val = item.partition("=")
                if sep and _NAME.match(name):
                    set_env[name] = val
    sent: dict[str, str] = {}
    for name, value in environ.items():
        chosen = False
        for pattern in send:
            if pattern.startswith("-"):
                if fnmatch.fnmatchcase(name, pattern[1:]):
                    chosen = False
            elif fnmatch.fnmatchcase(name, pattern):
                chosen = True
        if chosen:
            sent[name] = value
    return {**sent, **set_env}


def _accepted(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def command_environment(login: LoginEnvironment, sent: Mapping[str, str]) -> dict[str, str]:
    """The environment sshd gives a command: the recorded login's, plus the client-sent variables it accepts."""
    env = dict(login.env)
    for name, value in sent.items():
        if _NAME.match(name) and name not in PER_CONNECTION and _accepted(name, login.accept_env):
            env[name] = value
    return env


def effective_ssh_config(target: SshTarget) -> str:
    """``ssh -G`` for ``target``: the client config an ssh to it would use (no connection is made)."""
    argv = target.argv()
    result = subprocess.run(["ssh", "-G", *argv[1:]], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise OperationFailed(f"`ssh -G` failed: {result.stderr.strip()}")
    return result.stdout
