"""``banger update`` end to end, on a live install, without touching the host.

Three releases of this checkout are cut with ``scripts/release`` and signed by
the test's own Sigstore trust root (:class:`~banger_core.testing.sigstore_lab.TrustLab`):
v0.1.0, a broken v0.2.0 (it also carries ``banger-faildoctor-testplugin``, whose
doctor check always fails) and v0.3.0. Each carries ``banger-fake-testplugin``
(tests/support/dists), so the installed daemon can run a VM whose process
outlives a daemon restart.

Like tests/integration/test_system_live.py, banger runs in private mount and
network namespaces: ``/etc``, ``/opt`` and ``/var`` are overlays on a tmpfs (the
host's directories stay as they are), ``/run`` is a fresh tmpfs with
``/run/systemd/system``, and ``lo`` is up for the release server, a real HTTP
server on 127.0.0.1 in that network namespace. systemd itself cannot run here:
``systemctl`` is tests/support/fake_systemctl.py, which records every call and
really starts and stops the two units as their files say (bangerd as the
unprivileged owner ``daemon``, bangerd-root as root). ``/root`` is an overlay
too, opened for traversal (0711) inside the namespace only: the virtualenvs'
interpreter is the Python that ran the install, which lives under /root on the
lab machines (pyenv), where the owner could not run it. Everything else is real:
the offline install of v0.1.0 with ``banger system install --wheels``, the
installed daemons, the downloads, the Sigstore verification, the new virtualenvs,
the swap, the doctor run and the rollback.

The story: install v0.1.0 and run a VM (its stand-in VMM is launched by the
installed fake plugin and recorded as a launch records it, then adopted by
bangerd: the fake VMM never gets ssh-ready, so ``vm start`` would give up on it);
``banger update`` finds v0.2.0, swaps,
its doctor fails: rolled back to v0.1.0 with that error in one line; v0.3.0 is
published; ``banger update`` swaps to it; ``banger update --rollback`` goes back
to v0.1.0. The VM's process runs through all of it and each new daemon adopts it.
Every process started in the namespaces is killed by PID at the end.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.testing.sigstore_lab import TEST_IDENTITY, TEST_ISSUER, TrustLab
from tests.support import fake_systemctl
from tests.support.host_overlay import PRIVATE_HOST_MOUNTS
from tests.support.releases import FAILDOCTOR_PLUGIN, FAKE_PLUGIN, Releases, extract_wheels

#: The checkout's CLI: what installs the first release (as ``banger system install --wheels`` from a checkout).
CHECKOUT_BANGER = str(Path(sys.executable).parent / "banger")
#: The installed CLI: what the user runs once banger is installed (its update replaces it).
INSTALLED_BANGER = "/opt/banger/current/bin/banger"
#: The release server's port, in the test's own network namespace (nothing else listens there).
PORT = 8731
STEP_TIMEOUT = 300

#: Runs as the namespaces' first process: the private mounts, then "ready", then it waits for stdin to close.
SETUP = (
    "set -eu\n"
    + PRIVATE_HOST_MOUNTS
    + r"""ip link set lo up
echo ready
read -r _ || true
"""
)


class Namespaces:
    """Private mount and network namespaces, held by one process; commands enter them with ``nsenter``."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        (tmp / "up").mkdir()
        self.env = env
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", SETUP],
            env={**env, "T": str(tmp)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        ready, _, _ = select.select([self.holder.stdout], [], [], 30)
        if not ready or self.holder.stdout.readline() != "ready\n":
            self.holder.kill()  # set -e stopped it, or it hangs: nothing ran inside yet
            self.holder.wait(timeout=30)
            raise AssertionError("the namespaces were not set up (unshare, mount or ip failed: see stderr)")
        self.mount_ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        self.children: list[subprocess.Popen[bytes]] = []

    def run(self, *argv: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *argv: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """A long-running process in the namespaces (nsenter execs it: same PID), killed by :meth:`close`."""
        child = subprocess.Popen(
            ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--", *argv],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
        self.children.append(child)
        return child

    def members(self) -> list[int]:
        """Every process in these namespaces but the holder: only ever ones this test started."""
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != self.holder.pid:
                try:
                    if os.readlink(proc / "ns" / "mnt") == self.mount_ns:
                        found.append(int(proc.name))
                except OSError:
                    continue  # gone meanwhile
        return found

    def close(self) -> None:
        """Kill every process left in the namespaces (by PID), then let the holder go: the mounts vanish."""
        for _ in range(50):
            members = self.members()
            if not members:
                break
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for child in self.children:
            child.wait(timeout=30)
        assert self.holder.stdin is not None and self.holder.stdout is not None
        self.holder.stdin.close()
        self.holder.wait(timeout=30)
        self.holder.stdout.close()


class Install:
    """The live install inside the namespaces, driven as root through the installed CLI."""

    def __init__(self, ns: Namespaces, state: Path) -> None:
        self.ns = ns
        self.state = state  # the fake systemctl's PID files and service logs

    def banger(self, *args: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self.ns.run(INSTALLED_BANGER, *args, timeout=timeout)

    def read(self, path: str) -> str:
        done = self.ns.run("cat", path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def current(self) -> str:
        done = self.ns.run("readlink", "/opt/banger/current")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def main_pid(self, unit: str) -> int | None:
        return fake_systemctl.State(self.state).main_pid(unit)

    def wait_daemon(self, version: str) -> None:
        """Until the installed daemon answers, as ``version`` (Type=simple: started is not ready)."""
        deadline = time.monotonic() + 60
        while True:
            done = self.banger("version")
            if done.returncode == 0 and f"daemon:  {version} (" in done.stdout:
                return
            assert time.monotonic() < deadline, f"no daemon {version} answers: {done.stdout}{done.stderr}{self.logs()}"
            time.sleep(0.5)

    def vm(self, name: str) -> dict[str, object]:
        done = self.banger("vm", "show", name, "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def logs(self) -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.state.glob("*.log")))

    def vmm_pid_adopted(self, vm_id: str) -> int:
        """Give VM ``vm_id`` a running stand-in VMM that bangerd adopts, as it adopts a VM a previous daemon started.

        The fake VMM never becomes ssh-ready, so ``vm start`` would give up on it: like
        tests/integration/test_daemon.py, the test launches the VMM itself, with the installed
        fake plugin, as the owner, while bangerd is stopped, and records what a launch records
        (the VM's handles.json and its state); then bangerd starts and its reconcile adopts it.
        """
        assert self.ns.run("systemctl", "stop", "bangerd.service").returncode == 0
        socket = f"/run/banger/fake-vmm-{vm_id}.sock"
        launched = self.ns.run(*AS_OWNER, "/opt/banger/current/bin/python", "-c", LAUNCH, vm_id, socket)
        assert launched.returncode == 0, launched.stderr
        assert self.ns.run("systemctl", "start", "bangerd.service").returncode == 0
        return int(launched.stdout)


#: Runs as the owner: the installed plugin's VMM launched (in its own session, it outlives this),
#: then what a launch leaves behind (the VMM's handle, the VM's state) for reconcile to read.
LAUNCH = """
import json, sqlite3, sys
from banger_fake_testplugin.plugin import spawn, start_time
vm_id, socket = sys.argv[1], sys.argv[2]
pid = spawn(socket)
handle = {"backend": "fakevmm", "pid": pid, "start_time": start_time(pid), "control_socket": socket, "extra": {}}
with open(f"/var/lib/banger/vms/{vm_id}/handles.json", "w") as fh:
    json.dump({"vmm": handle}, fh)
db = sqlite3.connect("/var/lib/banger/banger.db")
with db:
    db.execute("UPDATE vms SET state = 'running' WHERE id = ?", (vm_id,))
db.close()
print(pid)
"""
#: bangerd's owner (`system install --owner daemon`), with its groups: how bangerd.service runs it.
AS_OWNER = ("setpriv", "--reuid=daemon", "--regid=daemon", "--init-groups", "--")


@pytest.fixture
def namespaces(tmp_path: Path, banger_env: dict[str, str]) -> Iterator[Namespaces]:
    env = {k: v for k, v in banger_env.items() if k not in ("BANGER_INSTALL_TOML", "PYTHONPATH")}
    ns = Namespaces(tmp_path, env)
    try:
        yield ns
    finally:
        ns.close()


def test_update_rollback_on_failing_doctor_then_update_then_rollback(
    tmp_path: Path, namespaces: Namespaces, trust_lab: TrustLab
) -> None:
    releases = Releases(tmp_path / "releases", trust_lab)
    releases.cut("v0.1.0", FAKE_PLUGIN)
    releases.cut("v0.2.0", FAKE_PLUGIN, FAILDOCTOR_PLUGIN)

    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    fake_systemctl.install(fakebin)
    calls = tmp_path / "systemctl-calls"
    state = tmp_path / "systemd"
    ns = namespaces
    # root's CLI (the checkout's for the first install, then the installed one): update reads the lab's policy.
    config = Path(ns.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(
        f'update_release_url = "http://127.0.0.1:{PORT}"\n'
        f'update_identity = "{TEST_IDENTITY}"\n'
        f'update_issuer = "{TEST_ISSUER}"\n'
        f'sigstore_trusted_root = "{trust_lab.trusted_root}"\n'
    )
    ns.env.update(
        PATH=f"{fakebin}:{ns.env['PATH']}",
        BANGER_TEST_CALLS=str(calls),
        BANGER_FAKE_SYSTEMD=str(state),
    )
    inst = Install(ns, state)

    server_log = tmp_path / "server.log"
    with server_log.open("wb") as log_file:
        ns.popen(
            sys.executable,
            "-u",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(releases.root),
            str(PORT),
            stdout=log_file.fileno(),
        )
    deadline = time.monotonic() + 30
    while "Serving HTTP on 127.0.0.1" not in server_log.read_text():
        assert time.monotonic() < deadline, f"the release server did not start: {server_log.read_text()}"
        time.sleep(0.1)

    wheels = tmp_path / "wheels-v0.1.0"
    extract_wheels(releases.root / "v0.1.0" / "banger-v0.1.0-wheelhouse.tar", wheels)
    installed = ns.run(CHECKOUT_BANGER, "system", "install", "--owner", "daemon", "--wheels", str(wheels))
    assert installed.returncode == 0, installed.stderr
    inst.wait_daemon("v0.1.0")
    created = inst.banger(
        "vm", "create", "--name", "keeper", "--image", "fake-tiny", "--backend", "fakevmm", "--no-start", "--json"
    )
    assert created.returncode == 0, created.stderr
    vmm_pid = inst.vmm_pid_adopted(json.loads(created.stdout)["id"])
    inst.wait_daemon("v0.1.0")
    assert inst.vm("keeper")["state"] == "running" and inst.vm("keeper")["pid"] == vmm_pid
    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "enable --now bangerd-root.service bangerd.service",
        "stop bangerd.service",
        "start bangerd.service",
    ]

    def update_calls() -> list[str]:
        lines = calls.read_text().splitlines()
        calls.write_text("")
        return lines

    update_calls()
    restart = ["restart bangerd-root.service", "restart bangerd.service"]

    check = inst.banger("update", "--check")
    assert (check.returncode, check.stdout) == (
        10,
        "banger v0.1.0; v0.2.0 is available: `sudo banger update` installs it\n",
    )

    # v0.2.0's doctor fails after the swap: back on v0.1.0, the doctor's own line in the one-line error.
    daemon = inst.main_pid("bangerd.service")
    broken = inst.banger("update")
    assert broken.returncode == 1
    assert broken.stderr.splitlines()[-1] == (
        "banger: error: switching to v0.2.0 failed: banger doctor of v0.2.0 failed: FAIL faildoctor "
        "this release is broken on purpose (banger-faildoctor-testplugin); back on v0.1.0 (services restarted)"
    )
    assert update_calls() == restart + restart
    assert inst.current() == "versions/v0.1.0"
    assert 'version = "v0.1.0"' in inst.read("/etc/banger/install.toml")
    assert inst.ns.run("ls", "/opt/banger/versions").stdout.split() == ["v0.1.0"]
    inst.wait_daemon("v0.1.0")
    assert inst.main_pid("bangerd.service") not in (None, daemon)
    daemon = inst.main_pid("bangerd.service")
    assert inst.vm("keeper")["state"] == "running" and inst.vm("keeper")["pid"] == vmm_pid

    # A good v0.3.0 is published: the update swaps to it and its daemon adopts the VM.
    releases.cut("v0.3.0", FAKE_PLUGIN)
    updated = inst.banger("update")
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.splitlines()[-1] == (
        "banger v0.1.0 -> v0.3.0 (services restarted, doctor passed); v0.1.0 kept for --rollback"
    )
    assert update_calls() == restart
    downloads = [line for line in server_log.read_text().splitlines() if "-wheelhouse.tar HTTP" in line]
    assert [line.split('"')[1] for line in downloads] == [
        "GET /v0.2.0/banger-v0.2.0-wheelhouse.tar HTTP/1.1",
        "GET /v0.3.0/banger-v0.3.0-wheelhouse.tar HTTP/1.1",
    ]
    assert inst.current() == "versions/v0.3.0"
    assert 'version = "v0.3.0"' in inst.read("/etc/banger/install.toml")
    assert inst.ns.run("ls", "/opt/banger/versions").stdout.split() == ["v0.1.0", "v0.3.0"]
    inst.wait_daemon("v0.3.0")
    assert inst.main_pid("bangerd.service") not in (None, daemon)
    daemon = inst.main_pid("bangerd.service")
    assert inst.vm("keeper")["state"] == "running" and inst.vm("keeper")["pid"] == vmm_pid

    # --rollback: back to v0.1.0, no download, the VM adopted once more.
    rolled = inst.banger("update", "--rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.splitlines()[-1] == (
        "banger v0.3.0 -> v0.1.0 (services restarted, doctor passed); v0.3.0 kept (--rollback again returns to it)"
    )
    assert update_calls() == restart
    assert server_log.read_text().count("-wheelhouse.tar HTTP") == 2  # nothing downloaded
    assert inst.current() == "versions/v0.1.0"
    assert 'version = "v0.1.0"' in inst.read("/etc/banger/install.toml")
    inst.wait_daemon("v0.1.0")
    assert inst.main_pid("bangerd.service") not in (None, daemon)
    assert inst.vm("keeper")["state"] == "running" and inst.vm("keeper")["pid"] == vmm_pid
    log = inst.read("/var/lib/banger/logs/bangerd.log")
    # Each daemon adopted it: v0.1.0's (started by the test), v0.2.0's and v0.1.0's again, v0.3.0's, v0.1.0's.
    assert log.count(f"adopted running VM keeper (pid {vmm_pid})") == 5
    # Rolled back, not pinned: the newest release is offered again.
    check = inst.banger("update", "--check")
    assert (check.returncode, check.stdout) == (
        10,
        "banger v0.1.0; v0.3.0 is available: `sudo banger update` installs it\n",
    )
    assert calls.read_text() == ""
