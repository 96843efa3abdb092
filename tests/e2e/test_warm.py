"""Warm starts end to end: a template of the golden image, VMs restored from it, and what they must get.

One template serves the whole module (making one boots a guest under TCG); the
session daemon runs with ``warm_auto = false``, so only this module makes one.
"""

from __future__ import annotations

import difflib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.cli.run_cmd import remote_command
from banger_core.common import paths
from banger_core.common.agent_client import AgentClient
from banger_core.common.errors import AgentAuthError
from banger_core.daemon.agent.client import HOST_TOKEN_FILE, agent_client_at
from banger_core.daemon.layout import Layout
from tests.e2e.test_vm_run import COUNT_FILES, fixture_repo, tracked_count  # noqa: F401 -- fixture
from tests.support.e2e import BIN, E2E, GOLDEN

#: What a cold VM and a warm VM must agree on about the file_sync entry: content, mode, owner.
FILE_SYNC_FACTS = "sha256sum /root/.gitconfig; stat -c '%a %u %g' /root/.gitconfig"


@pytest.fixture(scope="module")
def warmed(e2e: E2E) -> Iterator[str]:
    """``image warm``'s progress (stderr); the template is deleted at the end of the module."""
    result = e2e.banger("image", "warm", GOLDEN, timeout=1200)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{GOLDEN}: warm template saved (")
    yield result.stderr
    e2e.banger("image", "warm", "--rm", GOLDEN)


@pytest.fixture
def template(warmed: str) -> str:
    return GOLDEN


@pytest.fixture
def template_with_agent(warmed: str) -> str:
    """Identity needs the template's guest agent: making the template checked that it answers."""
    assert "guest agent does not answer" not in warmed, warmed
    return GOLDEN


def test_a_warm_vm_is_restored_and_reachable_with_strict_host_keys(e2e: E2E, template: str) -> None:
    e2e.banger("vm", "create", "--name", "warm-one", check=True)
    try:
        vm = e2e.vm("warm-one")
        assert vm["booted"] == "warm"
        shown = e2e.banger("vm", "show", "warm-one", check=True).stdout
        assert any(line.split() == ["booted", "warm"] for line in shown.splitlines())
        # vm ssh runs with StrictHostKeyChecking=yes against the key pinned for this VM.
        assert e2e.ssh("warm-one", "true").returncode == 0
        # Written after the restore, the file_sync entry matches what a cold VM gets, byte for byte.
        warm_facts = e2e.ssh("warm-one", "sh", "-c", FILE_SYNC_FACTS)
        assert warm_facts.returncode == 0, warm_facts.stderr
        e2e.banger("vm", "create", "--cold", "--name", "cold-one", check=True)
        assert e2e.vm("cold-one")["booted"] == "cold"
        cold_facts = e2e.ssh("cold-one", "sh", "-c", FILE_SYNC_FACTS)
        assert warm_facts.stdout == cold_facts.stdout and "640 0 0" in cold_facts.stdout
        # Later starts keep the VM's own disks: a cold boot, and what the VM wrote is still there.
        assert e2e.ssh("warm-one", "sh", "-c", "echo kept > /root/mine && sync").returncode == 0
        e2e.banger("vm", "restart", "warm-one", check=True, timeout=900)
        assert e2e.vm("warm-one")["booted"] == "cold"
        assert e2e.ssh("warm-one", "cat", "/root/mine").stdout == "kept\n"
    finally:
        for name in ("warm-one", "cold-one"):
            e2e.banger("vm", "delete", "--force", name, timeout=120)


def test_warm_vm_run_gets_the_workspace(e2e: E2E, template: str, fixture_repo: Path) -> None:  # noqa: F811
    result = e2e.banger("vm", "run", "--rm", str(fixture_repo), "--", "sh", "-c", f"pwd; {COUNT_FILES}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["/root/fixture-repo", str(tracked_count(fixture_repo))]
    assert e2e.vms() == []


IDENTITY = "hostname; cat /etc/machine-id; cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub; date +%s"


def test_warm_vm_run_answers_with_its_own_name(e2e: E2E, template_with_agent: str) -> None:
    result = e2e.banger("vm", "run", "--rm", "--name", "warm-named", "--", "hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "warm-named\n"


def test_two_warm_vms_of_one_template_are_distinct(e2e: E2E, template_with_agent: str) -> None:
    known_hosts = paths.state_dir(e2e.env) / "ssh" / "known_hosts"
    (template_token_file,) = (paths.state_dir(e2e.env) / "templates").glob(f"*/{HOST_TOKEN_FILE}")
    template_token = template_token_file.read_text().strip()
    facts = {}
    try:
        for name in ("twin-a", "twin-b"):
            e2e.banger("vm", "create", "--name", name, check=True)
            assert e2e.vm(name)["booted"] == "warm"
            # vm ssh checks the host key strictly against the entry pinned at restore.
            result = e2e.ssh(name, "sh", "-c", IDENTITY)
            assert result.returncode == 0, result.stderr
            hostname, machine_id, host_key, clock = result.stdout.splitlines()
            assert hostname == name
            assert abs(int(clock) - time.time()) < 120  # not the template's save time
            assert f"{name}.vm {host_key}\n" in known_hosts.read_text()
            # The agent token: the VM's own, no longer the one every VM of the template started with.
            layout = Layout(e2e.state, e2e.runtime)
            vm_id = str(e2e.vm(name)["id"])
            client = agent_client_at(layout, vm_id)
            assert client.token != template_token
            assert client.health(timeout=60)["ok"] is True
            with pytest.raises(AgentAuthError, match="refused this VM's token"):
                AgentClient(client.transport, template_token, client.lock_path).health(timeout=60)
            facts[name] = (machine_id, host_key, client.token)
        assert facts["twin-a"][0] != facts["twin-b"][0]
        assert facts["twin-a"][1] != facts["twin-b"][1]
        assert facts["twin-a"][2] != facts["twin-b"][2]
    finally:
        for name in ("twin-a", "twin-b"):
            e2e.banger("vm", "delete", "--force", name, timeout=120)


#: Printed by one command run both ways in one warm VM: its environment, directory, credentials, limits,
#: signal dispositions and argv (through the login shell's quoting).
LOGIN_PROBE = (
    'env | sort; echo --; pwd; id; umask; ulimit -a; grep -E "^Sig(Ign|Blk)" /proc/self/status; '
    'printf "[%s]\\n" "$0" "$@"'
)
PROBE_ARGS = ("probe", "two words", "it's", "$HOME", "*", "")
#: The only lines an ssh login adds: sshd sets them per connection; the agent has no connection to describe.
SSH_ONLY = ("SSH_CLIENT=", "SSH_CONNECTION=")


def test_warm_vm_run_through_the_agent_matches_an_ssh_login(
    e2e: E2E,
    template_with_agent: str,
    fixture_repo: Path,  # noqa: F811
) -> None:
    # Variables the ssh client sends (SendEnv LANG LC_* in Debian's ssh_config; the guest's sshd has
    # AcceptEnv LANG LC_*) and one it does not: the agent path must carry over exactly the same.
    env = {**e2e.env, "LANG": "C.UTF-8", "LC_MESSAGES": "POSIX", "BANGER_NOT_SENT": "1"}
    command = ["sh", "-c", LOGIN_PROBE, *PROBE_ARGS]

    def banger(*args: str) -> subprocess.CompletedProcess[str]:
        # stdin not a terminal: `vm run` then runs its command through the agent, and ssh allocates no pty.
        return subprocess.run(
            [str(BIN / "banger"), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900
        )

    run = banger("vm", "run", "--name", "login-probe", str(fixture_repo), "--", *command)
    try:
        assert run.returncode == 0, run.stderr
        via_agent = run.stdout.splitlines()
        assert not [line for line in via_agent if line.startswith(SSH_ONLY)]  # it did not go over ssh
        # The very command line `vm run` would have sent over ssh, over ssh.
        ssh = banger("vm", "ssh", "login-probe", "--", *remote_command(command, "/root/fixture-repo"))
        assert ssh.returncode == 0, ssh.stderr
        via_ssh = ssh.stdout.splitlines()
        assert sorted(line.split("=")[0] + "=" for line in via_ssh if line.startswith(SSH_ONLY)) == sorted(SSH_ONLY)
        expected = [line for line in via_ssh if not line.startswith(SSH_ONLY)]
        assert via_agent == expected, "\n".join(difflib.unified_diff(expected, via_agent, "ssh", "agent", lineterm=""))
        for expected in ("LANG=C.UTF-8", "LC_MESSAGES=POSIX", "/root/fixture-repo", "[two words]", "[it's]", "[$HOME]"):
            assert expected in via_agent, expected
        assert not [line for line in via_agent if line.startswith("BANGER_NOT_SENT=")]
    finally:
        e2e.banger("vm", "delete", "--force", "login-probe", timeout=120)


def test_warm_vm_run_through_the_agent_pipes_stdin_and_returns_the_status(e2e: E2E, template_with_agent: str) -> None:
    result = e2e.banger("vm", "run", "--rm", "--", "sh", "-c", "cat; echo to-stderr >&2; exit 3", input="piped\n")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "piped\n"
    assert "to-stderr\n" in result.stderr


# Last: it deletes the module's template.
def test_warm_rm_deletes_the_template(e2e: E2E, template: str) -> None:
    assert e2e.banger("image", "warm", "--rm", GOLDEN, check=True).stdout == f"{GOLDEN}: 1 warm template deleted\n"
    again = e2e.banger("image", "warm", "--rm", GOLDEN)
    assert again.returncode != 0
    assert again.stderr.strip().endswith(f"image {GOLDEN} has no warm template: `banger image warm {GOLDEN}` makes one")
    e2e.banger("vm", "create", "--name", "after-rm", check=True, timeout=900)
    try:
        assert e2e.vm("after-rm")["booted"] == "cold"
    finally:
        e2e.banger("vm", "delete", "--force", "after-rm", timeout=120)
