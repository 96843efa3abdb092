"""The guest agent end to end: a VM created by the real daemon (QEMU TCG, golden image), reached over its
virtio-serial channel with the token from its work disk: health, streamed exec, put/get, wrong token,
set_identity, and no network listener in the guest."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import secrets
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from banger_core.common.agent_client import AgentClient
from banger_core.common.agent_identity import GuestIdentity
from banger_core.common.errors import AgentAuthError
from banger_core.daemon.agent.client import agent_client_at
from banger_core.daemon.layout import Layout
from tests.support.e2e import BIN, E2E

pytestmark = pytest.mark.e2e

#: Lists the guest's TCP/UDP/raw sockets whose inode the agent process holds (printed as JSON).
NO_LISTENER_CHECK = """
import json, os, sys
pid = sys.argv[1]
inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
inodes = {i[8:-1] for i in inodes if i.startswith("socket:[")}
net = []
for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
    with open(f"/proc/net/{table}") as fh:
        net += [line.split()[9] for line in fh.readlines()[1:]]
print(json.dumps(sorted(inodes & set(net))))
"""


#: The inodes of the guest's sockets listening on TCP port 22 (JSON list).
SSHD_LISTENERS = """
import json
found = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table) as fh:
        rows = [line.split() for line in fh.readlines()[1:]]
    found += [row[9] for row in rows if row[1].endswith(":0016") and row[3] == "0A"]
print(json.dumps(sorted(found)))
"""


def run(client: AgentClient, *argv: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    out: list[bytes] = []
    err: list[bytes] = []
    status = client.exec(list(argv), stdout=out.append, stderr=err.append, stdin=stdin, timeout=120)
    return status, b"".join(out), b"".join(err)


def test_agent_health_exec_files_token_identity(e2e: E2E, tmp_path: Path) -> None:
    e2e.banger("vm", "create", "--name", "agent", check=True, timeout=600)
    vm_id = str(e2e.vm("agent")["id"])
    client = agent_client_at(Layout(e2e.state, e2e.runtime), vm_id)

    try:
        health = client.health(timeout=60)
    except Exception:
        diag = (
            "ps -eo pid,args | grep -i [a]gent; dmesg | grep -i banger; ls -l /run/banger; "
            "timeout 5 python3 -I -S /run/banger/agent; echo agent-rc=$?"
        )
        print(e2e.ssh("agent", "sh", "-c", diag))
        print(e2e.banger("vm", "logs", "agent").stdout[-3000:])
        raise
    assert health["ok"] is True and health["protocol"] == 1
    print(f"\nguest agent: ready {health['ready_ms']} ms after exec, RSS {health['rss_kib']} KiB, {health['python']}")

    # Streaming: each chunk arrives as its own frame, in order, before the exit status.
    events: list[tuple[str, bytes]] = []
    status = client.exec(
        ["sh", "-c", "echo one; sleep 1; echo two >&2; sleep 1; echo three; exit 3"],
        stdout=lambda data: events.append(("out", data)),
        stderr=lambda data: events.append(("err", data)),
        timeout=120,
    )
    assert status == 3
    assert events == [("out", b"one\n"), ("err", b"two\n"), ("out", b"three\n")]
    assert run(client, "hostname") == (0, b"agent\n", b"")
    payload = os.urandom(300_000)
    assert run(client, "sha256sum", stdin=payload)[1].split()[0].decode() == hashlib.sha256(payload).hexdigest()

    # put/get round trip through the guest's filesystem.
    assert client.put(payload, "/root/blob", mode=0o600, timeout=120) == len(payload)
    assert run(client, "stat", "-c", "%a %s", "/root/blob")[1] == f"600 {len(payload)}\n".encode()
    assert client.get("/root/blob", tmp_path / "blob", max_bytes=1 << 20, timeout=120) == len(payload)
    assert (tmp_path / "blob").read_bytes() == payload

    # A wrong token is refused; the right one still works afterwards.
    wrong = AgentClient(client.transport, secrets.token_hex(32), client.lock_path)
    with pytest.raises(AgentAuthError):
        wrong.health(timeout=60)
    assert client.health(timeout=60)["ok"] is True

    # The agent holds no TCP/UDP/raw socket: nothing on the guest network reaches it.
    agent_pid = str(health["pid"])
    status, out, err = run(client, "python3", "-c", NO_LISTENER_CHECK, agent_pid)
    assert (status, json.loads(out)) == (0, []), err

    # set_identity: hostname, machine-id and ssh host key change in place.
    key_dir = tmp_path / "key"
    key_dir.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_dir / "k")], check=True)
    machine_id = secrets.token_hex(16)
    # Debian 12's sshd re-reads host keys per connection anyway; other sshds (-r, OpenSSH's newer
    # sshd-session) do not: the running sshd must be reloaded, i.e. listen on new sockets afterwards.
    listeners = ["python3", "-c", SSHD_LISTENERS]
    before = json.loads(run(client, *listeners)[1])
    assert before
    client.set_identity(
        GuestIdentity(hostname="renamed", machine_id=machine_id, ssh_host_key=(key_dir / "k").read_bytes()),
        timeout=120,
    )
    after = json.loads(run(client, *listeners)[1])
    assert after and not set(after) & set(before)
    assert run(client, "hostname")[1] == b"renamed\n"
    assert run(client, "cat", "/etc/machine-id", "/etc/hostname")[1] == f"{machine_id}\nrenamed\n".encode()
    guest_public = run(client, "ssh-keygen", "-y", "-f", "/etc/ssh/ssh_host_ed25519_key")[1].split()[:2]
    assert guest_public == (key_dir / "k.pub").read_bytes().split()[:2]
    e2e.banger("vm", "delete", "--force", "agent", check=True, timeout=300)


def test_sessions_attach_detach_logs_stop_across_a_daemon_kill(e2e: E2E) -> None:
    e2e.banger("vm", "create", "--name", "sess", check=True, timeout=600)
    script = "echo started; while read line; do echo got:$line; echo err:$line >&2; done; echo bye; exit 5"
    result = e2e.banger("vm", "session", "start", "--name", "echoer", "sess", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "session echoer started in sess" in result.stdout
    e2e.banger("vm", "session", "start", "--name", "sleeper", "--stdin-mode", "none", "sess", "--", "sleep", "600")
    e2e.wait_for(lambda: e2e.banger("vm", "session", "logs", "sess", "echoer").stdout == "started\n", 60, "output")

    # Attach under a real pty, type a line, see the echo, detach with Ctrl-]: the session keeps running.
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the pty
        os.execve(str(BIN / "banger"), ["banger", "vm", "session", "attach", "sess", "echoer"], e2e.env)
    seen = b""
    try:
        seen += read_until(fd, b"Ctrl-] detaches")
        os.write(fd, b"hello\n")
        seen += read_until(fd, b"got:hello")
        os.write(fd, b"\x1d")
        seen += read_until(fd, b"detached from echoer (still running)")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen

    # The daemon dies hard; the next CLI call starts a new one, which adopts both sessions.
    daemon_pid = e2e.pid()
    assert daemon_pid is not None
    os.kill(daemon_pid, signal.SIGKILL)
    assert e2e.wait_gone(daemon_pid)
    listed = {
        s["name"]: s for s in json.loads(e2e.banger("vm", "session", "list", "sess", "--json", check=True).stdout)
    }
    assert {name: s["state"] for name, s in listed.items()} == {"echoer": "running", "sleeper": "running"}
    assert e2e.pid() not in (None, daemon_pid)

    # Output written while no daemon ran, and after adoption, reaches the host logs.
    attach_and_type(e2e, "again")
    e2e.wait_for(
        lambda: e2e.banger("vm", "session", "logs", "sess", "echoer").stdout == "started\ngot:hello\ngot:again\n",
        60,
        "adopted output",
    )
    assert (
        e2e.banger("vm", "session", "logs", "sess", "echoer", "--stream", "stderr").stdout == "err:hello\nerr:again\n"
    )

    stopped = e2e.banger("vm", "session", "stop", "sess", "sleeper", check=True)
    assert stopped.stdout.strip() == "session sleeper exited (status -15)"
    # A follower sees the end of the output when the session ends.
    follower = subprocess.Popen(
        [str(BIN / "banger"), "vm", "session", "logs", "-f", "sess", "echoer"],
        env=e2e.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    e2e.banger("vm", "session", "stop", "sess", "echoer", check=True)
    out, _ = follower.communicate(timeout=120)
    assert out.startswith("started\ngot:hello\ngot:again\n")
    listed = {
        s["name"]: s for s in json.loads(e2e.banger("vm", "session", "list", "sess", "--json", check=True).stdout)
    }
    assert {name: (s["state"], s["status"]) for name, s in listed.items()} == {
        "echoer": ("exited", -15),
        "sleeper": ("exited", -15),
    }
    refused = e2e.banger("vm", "session", "attach", "sess", "sleeper")
    assert refused.returncode == 1 and "session 'sleeper' is exited: nothing to attach to" in refused.stderr
    e2e.banger("vm", "delete", "--force", "sess", check=True, timeout=300)


def attach_and_type(e2e: E2E, line: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(str(BIN / "banger"), ["banger", "vm", "session", "attach", "sess", "echoer"], e2e.env)
    try:
        read_until(fd, b"Ctrl-] detaches")
        os.write(fd, f"{line}\n".encode())
        read_until(fd, f"got:{line}".encode())
        os.write(fd, b"\x1d")
        read_until(fd, b"detached")
    finally:
        os.waitpid(pid, 0)
        os.close(fd)


def read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    """Read the pty until ``marker`` shows up (bounded)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {marker!r} on the pty in {timeout} s; got {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"pty closed before {marker!r}; got {seen!r}")
            seen += chunk
    return seen
