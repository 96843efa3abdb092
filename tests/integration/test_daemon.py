"""bangerd for real: a daemon process, its SQLite file and Unix socket, driven through the SDK and CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from banger_core.api.models import VmDetail
from banger_core.client import DaemonUnavailable
from banger_core.common.errors import BangerError, Conflict, NotFound
from banger_core.daemon.state.db import MIGRATIONS
from tests.support import banger_fake
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent


def banger(h: DaemonHarness, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "banger", *args], env=h.env, capture_output=True, text=True, check=check, timeout=120)


def prepare(h: DaemonHarness) -> None:
    h.client().images.pull("fake-tiny")


def daemon_processes(h: DaemonHarness) -> list[int]:
    """bangerd processes whose environment is this test's (never anybody else's)."""
    mine = f"XDG_RUNTIME_DIR={h.env['XDG_RUNTIME_DIR']}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"banger_core.daemon" in (proc / "cmdline").read_bytes() and mine in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_autostart_says_so_once_and_socket_is_private(daemon: DaemonHarness) -> None:
    notes: list[str] = []
    client = daemon.client()
    client.notify = notes.append
    assert client.vms.list() == []
    assert len(notes) == 1 and notes[0].startswith("banger: started the daemon (pid ")
    client.vms.list()
    assert len(notes) == 1
    sock = daemon.runtime / "bangerd.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(daemon.runtime.stat().st_mode) == 0o700
    assert stat.S_IMODE((daemon.state / "banger.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.state.stat().st_mode) == 0o700
    status = banger(daemon, "daemon", "status", "--json", check=True)
    info = json.loads(status.stdout)
    assert info["running"] is True and info["pid"] == daemon.pid()
    # A second CLI call does not announce anything.
    assert banger(daemon, "vm", "list", check=True).stderr == ""
    log_file = daemon.state / "logs" / "bangerd.log"
    assert "listening on" in log_file.read_text()


def test_the_autostarted_daemon_gets_an_allowlisted_environment(daemon: DaemonHarness) -> None:
    """Issue 17 item 2: nothing of the shell's environment but what bangerd needs; its children inherit the same."""
    daemon.env.update(
        LD_PRELOAD="", PYTHONSTARTUP="/nonexistent/startup.py", SECRET_TOKEN="x", PATH=f".::{BIN}:/usr/bin:/bin"
    )
    daemon.client().vms.list()
    (pid,) = daemon_processes(daemon)
    environ = dict(
        entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry
    )
    assert not {"LD_PRELOAD", "PYTHONSTARTUP", "SECRET_TOKEN"} & set(environ)
    assert environ["PATH"] == f"{BIN}:/usr/bin:/bin"
    assert environ["HOME"] == daemon.env["HOME"] and environ["XDG_RUNTIME_DIR"] == daemon.env["XDG_RUNTIME_DIR"]


def test_racing_clis_end_with_one_daemon(daemon: DaemonHarness) -> None:
    procs = [
        subprocess.Popen([BIN / "banger", "vm", "list", "--json"], env=daemon.env, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6
    assert all(json.loads(out) == [] for out in outputs)
    assert daemon_processes(daemon) == [daemon.pid()]


def test_daemon_status_and_stop_when_not_running(daemon: DaemonHarness) -> None:
    result = banger(daemon, "daemon", "status")
    assert result.returncode == 1 and "bangerd is not running" in result.stdout
    with pytest.raises(DaemonUnavailable, match="bangerd is not running"):
        daemon.client(autostart=False).vms.list()
    assert daemon.pid() is None


def test_sigkill_then_cli_call_brings_it_back_with_state(daemon: DaemonHarness) -> None:
    prepare(daemon)
    client = daemon.client()
    vm = client.vms.create(name="keeper", backend="fakevmm", start=False)
    assert vm.state == "created"
    first = daemon.pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert daemon.wait_gone(first)
    result = banger(daemon, "vm", "list", "--json", check=True)
    assert [v["name"] for v in json.loads(result.stdout)] == ["keeper"]
    assert daemon.pid() not in (None, first)
    assert "started the daemon" in result.stderr


def test_graceful_stop_keeps_state_and_removes_the_socket(daemon: DaemonHarness) -> None:
    prepare(daemon)
    pid = daemon.pid()
    result = banger(daemon, "daemon", "stop", check=True)
    assert f"bangerd (pid {pid}) stopped" in result.stdout
    assert daemon.pid() is None and not (daemon.runtime / "bangerd.sock").exists()
    assert [i.name for i in daemon.client().images.list()] == ["fake-tiny"]


def test_corrupt_database_is_refused_and_left_untouched(daemon: DaemonHarness) -> None:
    daemon.state.mkdir(mode=0o700, parents=True)
    db = daemon.state / "banger.db"
    garbage = b"this is not sqlite " * 100
    db.write_bytes(garbage)
    result = banger(daemon, "vm", "list")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("banger: error: the daemon failed to start: cannot use the state database ")
    assert "file is not a database" in line and f"mv {db} {db}.broken" in line
    assert db.read_bytes() == garbage
    assert not any(p.name.startswith("banger.db-") for p in daemon.state.iterdir())  # no -wal/-shm made
    assert daemon.pid() is None


def test_database_from_a_newer_banger_is_refused(daemon: DaemonHarness) -> None:
    prepare(daemon)
    daemon.stop()
    db = daemon.state / "banger.db"
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, '2030-01-01')")
    result = banger(daemon, "vm", "list")
    assert result.returncode == 1
    latest = MIGRATIONS[-1][0]
    assert f"has schema version 99, newer than this banger knows ({latest}): upgrade banger" in result.stderr


def test_ten_concurrent_creates_get_unique_names_addresses_and_macs(daemon: DaemonHarness) -> None:
    prepare(daemon)
    results: list[VmDetail] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            # Bridge VMs get addresses from cidr; not started, so no bridge or tap is made.
            results.append(daemon.client().vms.create(backend="fakevmm", network="bridge", start=False))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len({r.name for r in results}) == 10
    assert len({r.guest_ip for r in results}) == 10
    assert len({r.mac for r in results}) == 10
    assert all(r.state == "created" for r in results)
    listed = daemon.client().vms.list()
    assert len(listed) == 10
    assert "database is locked" not in (daemon.state / "logs" / "bangerd.log").read_text()


@pytest.mark.parametrize(
    "name",
    ["../x", "UPPER", "a" * 64, "", "ünïcode", "-leading", "trailing-", "with space", "dot.ted"],
)
def test_invalid_names_are_refused_and_nothing_is_created(daemon: DaemonHarness, name: str) -> None:
    prepare(daemon)
    result = banger(daemon, "vm", "create", "--name", name, "--backend", "fakevmm", "--no-start")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("banger: error: invalid VM name")
    assert "Traceback" not in result.stderr
    assert daemon.client().vms.list() == []
    assert not (daemon.state / "vms").exists() or list((daemon.state / "vms").iterdir()) == []


def test_show_delete_and_errors(daemon: DaemonHarness) -> None:
    prepare(daemon)
    client = daemon.client()
    client.vms.create(name="alpha", backend="fakevmm", start=False)
    shown = json.loads(banger(daemon, "vm", "show", "alpha", "--json", check=True).stdout)
    assert shown["name"] == "alpha" and shown["image"] == "fake-tiny" and shown["kernel"] == "fake-kernel"
    assert shown["spec_sources"]["backend"] == "flag" and shown["spec_sources"]["image"] == "config"
    assert shown["spec_sources"]["kernel"] == "image" and shown["spec_sources"]["vcpus"] == "host"
    vm_dir = daemon.state / "vms" / shown["id"]
    assert (vm_dir / "overlay.ext4").exists() and (vm_dir / "work.ext4").exists()
    with pytest.raises(Conflict, match="a VM named 'alpha' already exists"):
        client.vms.create(name="alpha", backend="fakevmm", start=False)
    with pytest.raises(NotFound, match="no VM named 'nope'"):
        client.vms.get("nope")
    missing = banger(daemon, "vm", "show", "nope")
    assert missing.returncode == 1 and missing.stderr.strip() == (
        "banger: error: no VM named 'nope': `banger vm list` shows the VMs"
    )
    table = banger(daemon, "vm", "list", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "STATE", "IMAGE"] and table[1].split()[:3] == [
        "alpha",
        "created",
        "fake-tiny",
    ]
    banger(daemon, "vm", "delete", "alpha", check=True)
    assert client.vms.list() == [] and not vm_dir.exists()
    client.vms.create(name="beta", backend="fakevmm", start=False)
    with pytest.raises(Conflict, match=r"^image 'fake-tiny' is in use by VMs beta: delete them first"):
        client.images.delete("fake-tiny")


def test_daemon_status_reports_the_pulls_in_progress(daemon: DaemonHarness, tmp_path: Path) -> None:
    """``in_progress`` is what `banger update` reads before restarting the service."""
    gate = tmp_path / "gate"
    daemon.env["BANGER_TEST_GATE"] = str(gate)
    client = daemon.client()
    assert client.daemon.status().in_progress == {}
    pulling = threading.Thread(target=lambda: daemon.client().images.pull("fake-gated"))
    pulling.start()
    try:
        deadline = time.monotonic() + 30
        while client.daemon.status().in_progress != {"image pull": 1} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.daemon.status().in_progress == {"image pull": 1}
    finally:
        gate.touch()
        pulling.join(timeout=60)
    assert client.daemon.status().in_progress == {}


def test_image_pull_failure_leaves_nothing(daemon: DaemonHarness) -> None:
    with pytest.raises(BangerError, match="the fake source breaks on purpose"):
        daemon.client().images.pull("fake-broken")
    assert daemon.client().images.list() == []
    leftovers = [p.name for p in (daemon.state / "images").iterdir()]
    assert leftovers == []


def _set_running(db: Path, names: list[str]) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany("UPDATE vms SET state = 'running' WHERE name = ?", [(n,) for n in names])


def test_reconcile_adopts_a_live_vmm_and_demotes_a_dead_one(daemon: DaemonHarness, tmp_path: Path) -> None:
    prepare(daemon)
    client = daemon.client()
    live = client.vms.create(name="live", backend="fakevmm", start=False)
    dead = client.vms.create(name="dead", backend="fakevmm", start=False)
    daemon.stop()
    pids: list[int] = []
    try:
        handles = {}
        for vm in (live, dead):
            sock = str(tmp_path / f"{vm.name}.sock")
            pid = banger_fake.spawn(sock)
            pids.append(pid)
            handles[vm.name] = {
                "vmm": {
                    "backend": "fakevmm",
                    "pid": pid,
                    "start_time": banger_fake.start_time(pid),
                    "control_socket": sock,
                    "extra": {},
                },
            }
            (daemon.state / "vms" / vm.id / "handles.json").write_text(json.dumps(handles[vm.name]))
        os.kill(pids[1], signal.SIGKILL)
        _set_running(daemon.state / "banger.db", ["live", "dead"])
        vms = {vm.name: vm for vm in daemon.client().vms.list()}
        assert vms["live"].state == "running" and vms["live"].pid == pids[0]
        assert vms["dead"].state == "stopped"
        assert f"(pid {pids[1]}) was gone when the daemon started" in (vms["dead"].last_error or "")
        dead_dir = daemon.state / "vms" / dead.id
        assert (dead_dir / "overlay.ext4").exists() and not (dead_dir / "handles.json").exists()
        log = (daemon.state / "logs" / "bangerd.log").read_text()
        assert "adopted running VM live" in log
        # A VMM that dies while the daemon runs is noticed without any command.
        os.kill(pids[0], signal.SIGKILL)
        for _ in range(100):
            if daemon.client().vms.get("live").state == "stopped":
                break
            threading.Event().wait(0.1)
        after = daemon.client().vms.get("live")
        assert after.state == "stopped" and "process exited" in (after.last_error or "")
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sigterm_leaves_running_vms_running(daemon: DaemonHarness, tmp_path: Path) -> None:
    prepare(daemon)
    vm = daemon.client().vms.create(name="survivor", backend="fakevmm", start=False)
    daemon.stop()
    sock = str(tmp_path / "vmm.sock")
    pid = banger_fake.spawn(sock)
    try:
        handle = {"backend": "fakevmm", "pid": pid, "start_time": banger_fake.start_time(pid), "control_socket": sock}
        (daemon.state / "vms" / vm.id / "handles.json").write_text(json.dumps({"vmm": handle}))
        _set_running(daemon.state / "banger.db", ["survivor"])
        assert daemon.client().vms.get("survivor").state == "running"
        daemon_pid = daemon.pid()
        assert daemon_pid is not None
        os.kill(daemon_pid, signal.SIGTERM)
        assert daemon.wait_gone(daemon_pid)
        assert banger_fake.answers(sock), "the VM process died with the daemon"
        assert daemon.client().vms.get("survivor").state == "running"
    finally:
        os.kill(pid, signal.SIGKILL)


def test_image_and_kernel_export_write_bundles_the_catalog_reads(daemon: DaemonHarness, tmp_path: Path) -> None:
    from banger_core.testing import RecordingProgress
    from banger_hookspecs.bundle_reader import extract_bundle

    prepare(daemon)
    out = tmp_path / "fake.tar.zst"
    result = banger(daemon, "image", "export", "fake-tiny", "-o", str(out), check=True)
    assert result.stdout.startswith(f"{out}: ") and "sha256 " in result.stdout
    dest = tmp_path / "unpacked"
    dest.mkdir()
    manifest = extract_bundle(out, "image", dest, RecordingProgress(), "fake-tiny")
    assert manifest.name == "fake-tiny"
    image = daemon.client().images.get("fake-tiny")
    assert (dest / "rootfs.ext4").read_bytes() == Path(image.path).read_bytes()
    again = banger(daemon, "image", "export", "fake-tiny", "-o", str(out))
    assert again.returncode == 1 and again.stderr.startswith("banger: error: ") and "--force" not in again.stdout
    assert banger(daemon, "image", "export", "fake-tiny", "-o", str(out), "--force").returncode == 0
    kernel_out = tmp_path / "kernel.tar.zst"
    banger(daemon, "kernel", "export", "fake-kernel", "-o", str(kernel_out), check=True)
    kdest = tmp_path / "kernel"
    kdest.mkdir()
    assert extract_bundle(kernel_out, "kernel", kdest, RecordingProgress(), "fake-kernel").kind == "kernel"
    assert (kdest / "vmlinux").read_bytes() == b"\x7fELF not a kernel"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('host = "/etc/hostname"\nguest = "~/hostname"', 'file_sync entry 1 (host "/etc/hostname"): '),
        ('host = "~/escape"\nguest = "~/escape"', 'file_sync entry 1 (host "~/escape"): '),
        ('host = "~/ok.txt"\nguest = "/etc/passwd"', 'file_sync entry 1 (host "~/ok.txt"): '),
    ],
)
def test_bad_file_sync_entries_refuse_the_create(daemon: DaemonHarness, entry: str, message: str) -> None:
    home = Path(daemon.env["HOME"])
    (home / "ok.txt").write_text("fine\n")
    (home / "escape").symlink_to("/etc/hostname")  # a top-level symlink leaving home
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(f'default_image = "fake-tiny"\n\n[[file_sync]]\n{entry}\n')
    prepare(daemon)
    result = banger(daemon, "vm", "create", "--name", "never", "--backend", "fakevmm", "--no-start")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"banger: error: {message}"), lines
    assert daemon.client().vms.list() == []
    assert not (daemon.state / "vms").exists() or not any((daemon.state / "vms").iterdir())


def test_good_file_sync_entry_lands_on_the_work_disk(daemon: DaemonHarness) -> None:
    home = Path(daemon.env["HOME"])
    (home / "dot").mkdir()
    (home / "dot" / "gitconfig").write_text("[user]\n")
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(
        'default_image = "fake-tiny"\n\n[[file_sync]]\nhost = "~/dot/gitconfig"\nguest = "~/.gitconfig"\n'
    )
    prepare(daemon)
    vm = daemon.client().vms.create(name="synced", backend="fakevmm", start=False)
    work = daemon.state / "vms" / vm.id / "work.ext4"
    listing = subprocess.run(
        ["debugfs", "-R", "stat /.gitconfig", str(work)], capture_output=True, text=True, check=True
    ).stdout
    assert "Mode:  0600" in listing
    keys = subprocess.run(
        ["debugfs", "-R", "cat /.ssh/authorized_keys", str(work)], capture_output=True, text=True, check=True
    ).stdout
    assert keys.strip() == (daemon.state / "ssh" / "id_ed25519.pub").read_text().strip()


def test_rm_vm_that_never_became_ready_is_kept_for_inspection(daemon: DaemonHarness) -> None:
    config = Path(daemon.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('default_image = "fake-tiny"\nssh_ready_timeout = 2\n')
    prepare(daemon)
    result = banger(daemon, "vm", "run", "--rm", "--name", "sulky", "--backend", "fakevmm", "--", "true")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("banger: error: VM sulky did not become ssh-ready within 2 s")
    assert last.endswith("-- VM sulky was kept for inspection: `banger vm logs sulky`, then `banger vm delete sulky`")
    vm = daemon.client().vms.get("sulky")
    assert vm.state == "error" and "did not become ssh-ready" in (vm.last_error or "")
    assert vm.pid is None  # its VMM was stopped; the disks stay for inspection
    assert (daemon.state / "vms" / vm.id / "overlay.ext4").exists()
    assert banger(daemon, "vm", "logs", "sulky").returncode == 0
    banger(daemon, "vm", "delete", "sulky", check=True)


def test_backend_that_cannot_attach_the_network_is_refused_up_front(daemon: DaemonHarness) -> None:
    prepare(daemon)
    result = banger(daemon, "vm", "create", "--name", "fc", "--backend", "firecracker", "--no-start")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "banger: error: VMM backend firecracker cannot attach usernet NICs (user): "
        "use --network with a tap backend (e.g. --network bridge)"
    )
    assert daemon.client().vms.list() == []


def test_host_access_is_stored_shown_and_refused_where_it_cannot_apply(daemon: DaemonHarness) -> None:
    prepare(daemon)
    banger(daemon, "vm", "create", "--name", "closed", "--backend", "fakevmm", "--no-start", check=True)
    opened = banger(daemon, "vm", "create", "--name", "open", "--backend", "fakevmm", "--host-access", "--no-start")
    assert opened.returncode == 0 and "network usernet (default) with host access," in opened.stderr
    assert daemon.client().vms.get("closed").host_access is False
    assert daemon.client().vms.get("open").host_access is True
    assert daemon.client().vms.get("open").spec_sources["host_access"] == "flag"
    shown = banger(daemon, "vm", "show", "open", check=True).stdout
    assert re.search(r"^host access\s+yes$", shown, re.M)
    assert re.search(r"^host access\s+no \(isolated\)$", banger(daemon, "vm", "show", "closed").stdout, re.M)

    bridged = banger(daemon, "vm", "create", "--name", "br", "--network", "bridge", "--host-access", "--no-start")
    assert bridged.returncode == 1 and bridged.stderr.strip().splitlines()[-1] == (
        "banger: error: --host-access only applies to user-mode networking (--network usernet): "
        "a bridge guest never reaches the host's 127.0.0.1"
    )
    with pytest.raises(BangerError, match='host_access: expected true or false, got "yes"'):
        daemon.client().vms.create(name="typo", backend="fakevmm", start=False, host_access="yes")  # type: ignore[typeddict-item]
    assert sorted(vm.name for vm in daemon.client().vms.list()) == ["closed", "open"]
