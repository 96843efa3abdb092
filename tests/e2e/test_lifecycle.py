"""VM lifecycle end to end: real daemon, real QEMU guests (TCG here), ssh with pinned host keys."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path

from tests.support.e2e import E2E, vmm_pids


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def known_hosts(e2e: E2E) -> str:
    return (e2e.state / "ssh" / "known_hosts").read_text()


def test_create_ssh_stop_start_delete(e2e: E2E) -> None:
    created = e2e.banger("vm", "create", "--name", "life", check=True)
    assert "spec: " in created.stderr and "backend qemu" in created.stderr
    assert e2e.vm("life")["state"] == "running"
    assert e2e.ssh("life", "cat", "/etc/hostname").stdout == "life\n"
    assert e2e.ssh("life", "sh", "-c", "exit 42").returncode == 42
    # A password is refused outright: only banger's key gets in.
    sshd = e2e.ssh("life", "sh", "-c", "sshd -T | grep -E '^(passwordauthentication|permitrootlogin) '").stdout
    assert "passwordauthentication no" in sshd and "permitrootlogin without-password" in sshd
    pid = int(str(e2e.vm("life")["pid"]))
    e2e.ssh("life", "sh", "-c", "echo kept > /root/note; echo also > /etc/banger-note; sync")

    e2e.banger("vm", "stop", "life", check=True)
    stopped = e2e.vm("life")
    assert stopped["state"] == "stopped" and stopped["pid"] is None
    assert not Path(f"/proc/{pid}").exists()
    vm_dir = e2e.state / "vms" / str(stopped["id"])
    assert not (vm_dir / "handles.json").exists()

    e2e.banger("vm", "start", "life", check=True)
    assert e2e.ssh("life", "cat", "/root/note", "/etc/banger-note").stdout == "kept\nalso\n"

    assert e2e.banger("vm", "delete", "life").returncode == 1  # running: refused without --force
    e2e.banger("vm", "delete", "--force", "life", check=True)
    assert e2e.vms() == []
    assert not vm_dir.exists()
    assert vmm_pids(e2e.state) == []
    assert "life.vm " not in known_hosts(e2e)


def test_two_vms_of_one_image_then_crash_and_daemon_loss(e2e: E2E) -> None:
    rootfs = Path(_image_path(e2e))
    before = sha256(rootfs)
    threads = [threading.Thread(target=e2e.banger, args=("vm", "create", "--name", n)) for n in ("twin-a", "twin-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    states = {str(vm["name"]): vm["state"] for vm in e2e.vms()}
    assert states == {"twin-a": "running", "twin-b": "running"}

    probe = "cat /etc/hostname /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub; touch /usr/local/write-test"
    a = e2e.ssh("twin-a", "sh", "-c", probe).stdout.splitlines()
    b = e2e.ssh("twin-b", "sh", "-c", probe).stdout.splitlines()
    assert a[0] == "twin-a" and b[0] == "twin-b"
    assert a[1] != b[1] and a[2] != b[2]  # own machine-id, own host key
    assert e2e.ssh("twin-a", "findmnt", "-n", "-o", "FSTYPE", "/").stdout.strip() == "overlay"
    assert e2e.ssh("twin-a", "findmnt", "-n", "-o", "SOURCE", "/root").stdout.strip() == "/dev/vdc"

    # The daemon dies hard while both run: the next CLI call brings it back and it adopts them.
    daemon_pid = e2e.pid()
    assert daemon_pid is not None
    os.kill(daemon_pid, signal.SIGKILL)
    assert e2e.wait_gone(daemon_pid)
    states = {str(vm["name"]): vm["state"] for vm in e2e.vms()}
    assert states == {"twin-a": "running", "twin-b": "running"}
    assert e2e.pid() not in (None, daemon_pid)
    assert e2e.ssh("twin-b", "cat", "/etc/hostname").stdout == "twin-b\n"

    # Killing a VM's QEMU by hand: the daemon notices and says why.
    qemu_pid = int(str(e2e.vm("twin-a")["pid"]))
    os.kill(qemu_pid, signal.SIGKILL)
    e2e.wait_for(lambda: e2e.vm("twin-a")["state"] == "stopped", 60, "twin-a to be marked stopped")
    last_error = str(e2e.vm("twin-a")["last_error"])
    assert "process exited" in last_error

    for name in ("twin-a", "twin-b"):
        e2e.banger("vm", "delete", "--force", name, check=True)
    assert sha256(rootfs) == before  # the shared image was never written


def _image_path(e2e: E2E) -> str:
    import json

    images = json.loads(e2e.banger("image", "list", "--json", check=True).stdout)
    return str(next(i["path"] for i in images if i["name"] == "debian-bookworm"))
