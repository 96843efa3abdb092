"""The VM service in-process: real Runtime, SQLite file, disks and VMM child processes; no daemon.

Plugins are the test ones (``tests.support``): fake images and kernels, the
fake VMM whose guest prints the ready marker, network backends without a host
side. The one stand-in is the readiness ssh login (there is no guest sshd):
``probe`` records the exact target the service would log in to.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from banger_core.api.models import Deleted, RunPlan, VmDetail
from banger_core.api.state import VmState
from banger_core.common.errors import BangerError, Conflict, NotFound, OperationFailed
from banger_core.common.names import InvalidName
from banger_core.common.ssh import SshTarget
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.state.models import Vm
from banger_core.daemon.vm import CreateRequest, VmService
from banger_core.daemon.vm.handles import VmHandles
from banger_core.daemon.vm.warm import Template, TemplateKey
from banger_core.testing import FakeSite, RecordingProgress
from banger_hookspecs import PortForward
from tests.support import banger_fakenet
from tests.support.banger_fake import start_time
from tests.support.daemon import install_fake_plugin

pytestmark = pytest.mark.unit

#: Builtin plugins blocked, so the same backends exist with or without them installed (tox -e core has none).
BUILTINS = "qemu,firecracker,bridge,usernet,catalog,debootstrap,debian,resolved,git"
CONFIG = """\
default_image = "fake-tiny"
network_backend = "fakeuser"
vmm_backend = "bootvmm"
ssh_ready_timeout = 2
cidr = "10.9.0.0/29"
bridge_ip = "10.9.0.1"
"""


@dataclass
class Probe:
    """The readiness login: records each target; ``ready`` says whether the guest's sshd lets banger in."""

    ready: bool = True
    targets: list[SshTarget] = field(default_factory=list)

    def __call__(self, target: SshTarget) -> bool:
        self.targets.append(target)
        return self.ready


@dataclass
class Host:
    rt: Runtime
    store: Store
    probe: Probe
    vms: VmService

    def restarted_daemon(self) -> VmService:
        """A new service on the same state, as after a daemon restart: nothing in memory."""
        return VmService(self.rt, self.store, ssh_probe=self.probe)

    def vm_dirs(self) -> list[str]:
        return sorted(p.name for p in self.rt.layout.vms.iterdir()) if self.rt.layout.vms.exists() else []

    def pid(self, name: str) -> int:
        pid = self.vms.get(name).pid
        assert isinstance(pid, int)
        return pid


def alive(pid: int) -> bool:
    """The fake VMM ``pid`` runs (a zombie, or a reaped pid, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill(pid: int) -> None:
    """SIGKILL a fake VMM this test process started, and reap it."""
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.fixture
def host(banger_env: dict[str, str], banger_site: FakeSite) -> Iterator[Host]:
    install_fake_plugin(banger_site)
    banger_site.write_dist_info("banger-fakenet-testplugin", "0.0.1", {"fakenet": "tests.support.banger_fakenet"})
    banger_site.write_dist_info("banger-bootvmm-testplugin", "0.0.1", {"bootvmm": "tests.support.banger_bootvmm"})
    (Path(banger_env["XDG_CONFIG_HOME"]) / "banger" / "config.toml").write_text(CONFIG)
    banger_fakenet.ATTACHED.clear()
    banger_fakenet.SET_UP.clear()
    rt = Runtime({**banger_env, "BANGER_DISABLE_PLUGINS": BUILTINS})
    rt.open()
    store = Store(rt)
    store.pull_image("fake-tiny", RecordingProgress())
    probe = Probe()
    host = Host(rt, store, probe, VmService(rt, store, ssh_probe=probe))
    spawned: set[tuple[int, int]] = set()
    host.vms.on_change.append(
        lambda: spawned.update((h.vmm.pid, h.vmm.start_time) for h in host.vms.handles.cache.values() if h.vmm)
    )
    try:
        yield host
    finally:
        for pid, started in spawned:
            if start_time(pid) == started and alive(pid):
                kill(pid)
        rt.close()


def create(
    host: Host, name: str, *, start: bool = True, network: str | None = None, remove_on_exit: bool = False
) -> VmDetail:
    request = CreateRequest(name=name, start=start, network=network, remove_on_exit=remove_on_exit)
    return host.vms.create(request, RecordingProgress())


# -- lifecycle ---------------------------------------------------------------


def test_create_boots_the_vm_and_records_its_handles(host: Host) -> None:
    progress = RecordingProgress()
    plans: list[RunPlan] = []
    vm = host.vms.create(CreateRequest(name="dev"), progress, on_spec=plans.append)
    assert vm.state == VmState.RUNNING and vm.backend == "bootvmm" and vm.network == "fakeuser"
    assert [plan.values.backend for plan in plans] == ["bootvmm"] and progress.steps[-1] == "dev is running"
    pid = host.pid("dev")
    assert alive(pid)
    # The readiness login went to the attachment's endpoint with banger's key, once.
    [target] = host.probe.targets
    assert (target.name, target.host, target.port, target.key) == ("dev", "127.0.0.1", 2222, str(host.rt.keys.key))
    handles = host.restarted_daemon().handles.read(str(vm.id))
    assert handles is not None and handles.vmm is not None and handles.vmm.pid == pid
    assert handles.net == banger_fakenet.ATTACHED[str(vm.id)]
    assert host.vms.ssh_target("dev").port == 2222


def test_stop_kills_and_reaps_the_vmm_and_releases_the_nic(host: Host) -> None:
    vm = create(host, "dev")
    pid = host.pid("dev")
    stopped = host.vms.stop("dev", RecordingProgress())
    assert stopped.state == VmState.STOPPED and stopped.pid is None and stopped.last_error is None
    assert not alive(pid) and not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    assert banger_fakenet.ATTACHED == {} and host.vms.handles.read(str(vm.id)) is None
    with pytest.raises(Conflict, match=r"^VM dev is not running \(stopped\)$"):
        host.vms.stop("dev", RecordingProgress())
    with pytest.raises(Conflict, match=r"^VM dev is stopped, not running: start it: `banger vm start dev`$"):
        host.vms.ssh_target("dev")


def test_start_and_restart(host: Host) -> None:
    create(host, "dev", start=False)
    assert host.vms.get("dev").state == VmState.CREATED and host.probe.targets == []
    assert host.vms.start("dev", RecordingProgress()).state == VmState.RUNNING
    first = host.pid("dev")
    with pytest.raises(Conflict, match=r"^VM dev is already running$"):
        host.vms.start("dev", RecordingProgress())
    assert host.vms.restart("dev", RecordingProgress()).state == VmState.RUNNING
    second = host.pid("dev")
    assert second != first and alive(second) and not alive(first)
    host.vms.stop("dev", RecordingProgress())
    assert host.vms.restart("dev", RecordingProgress()).state == VmState.RUNNING
    assert len(banger_fakenet.ATTACHED) == 1


def test_delete_refuses_a_running_vm_unless_forced_and_leaves_nothing(host: Host) -> None:
    vm = create(host, "dev")
    pid = host.pid("dev")
    with pytest.raises(Conflict, match=r"^VM dev is running: stop it first, or pass --force to stop and delete it$"):
        host.vms.delete("dev", RecordingProgress())
    assert host.vms.get("dev").state == VmState.RUNNING and alive(pid)
    assert host.vms.delete("dev", RecordingProgress(), force=True) == Deleted(name="dev")
    assert host.vms.all() == [] and host.vm_dirs() == [] and not alive(pid)
    assert not host.rt.layout.vm_run_dir(str(vm.id)).exists() and banger_fakenet.ATTACHED == {}
    with pytest.raises(NotFound, match=r"^no VM named 'dev': `banger vm list` shows the VMs$"):
        host.vms.get("dev")


def test_a_boot_that_never_gets_ready_ends_in_error_with_nothing_held(host: Host) -> None:
    host.probe.ready = False
    with pytest.raises(
        OperationFailed, match=r"^VM stuck did not become ssh-ready within 2 s .*BANGER-READY fake-boot"
    ):
        create(host, "stuck")
    vm = host.vms.get("stuck")
    assert vm.state == VmState.ERROR and "did not become ssh-ready" in str(vm.last_error)
    assert vm.pid is None and banger_fakenet.ATTACHED == {} and host.vms.handles.read(str(vm.id)) is None
    # error -> stopped without a process to stop, then a start that works.
    assert host.vms.stop("stuck", RecordingProgress()).state == VmState.STOPPED
    host.probe.ready = True
    assert host.vms.start("stuck", RecordingProgress()).state == VmState.RUNNING


def test_a_failed_rm_vm_is_kept_for_inspection(host: Host) -> None:
    host.probe.ready = False
    with pytest.raises(OperationFailed):
        create(host, "once", remove_on_exit=True)
    vm = host.vms.get("once")
    assert vm.state == VmState.ERROR and vm.remove_on_exit is False


# -- transitions -------------------------------------------------------------


def test_illegal_transitions_are_refused_and_change_nothing(host: Host) -> None:
    vm = create(host, "dev", start=False)
    with pytest.raises(Conflict, match=r"^VM dev is created; it cannot become running \(from created: starting\)$"):
        host.vms.records.set_state(str(vm.id), VmState.RUNNING)
    with pytest.raises(Conflict, match=r"^VM dev is created; it cannot become stopping"):
        host.vms.records.set_state(str(vm.id), VmState.STOPPING)
    assert host.vms.get("dev").state == VmState.CREATED
    with pytest.raises(Conflict, match=r"^VM dev is not running \(created\)$"):
        host.vms.stop("dev", RecordingProgress())
    host.vms.records.set_state(str(vm.id), VmState.STARTING)
    with pytest.raises(Conflict, match=r"^VM dev is starting: wait for it, or `banger vm stop --force dev`$"):
        host.vms.start("dev", RecordingProgress())


# -- allocation --------------------------------------------------------------


def test_guest_addresses_run_out_with_a_clear_error_and_are_reused_after_delete(host: Host) -> None:
    # 10.9.0.0/29: hosts .1-.6, .1 is the bridge, .6 the warm templates' (alloc.template_ip): four guests.
    ips = [create(host, f"tap{i}", network="faketap", start=False).guest_ip for i in range(4)]
    assert ips == [f"10.9.0.{n}" for n in range(2, 6)]
    with pytest.raises(Conflict, match=r"^no free guest address left in 10\.9\.0\.0/29: delete VMs or widen cidr$"):
        create(host, "tap4", network="faketap", start=False)
    assert len(host.vms.all()) == 4 and len(host.vm_dirs()) == 4
    host.vms.delete("tap2", RecordingProgress())
    assert create(host, "tap4", network="faketap", start=False).guest_ip == "10.9.0.4"
    macs = [vm.mac for vm in host.vms.all()]
    assert len(set(macs)) == 4 and all(str(mac).startswith("52:54:00:") for mac in macs)
    # User-mode NICs take no address from the pool.
    assert create(host, "user", start=False).guest_ip is None


def test_the_first_vm_on_a_backend_sets_its_host_side_up_once(host: Host) -> None:
    """Issue 17 item 6: a daemon set up for one backend gives a VM another one (`--network bridge` on usernet)."""
    assert banger_fakenet.SET_UP == []  # an in-process service: no daemon start set anything up
    create(host, "one", network="faketap")
    assert banger_fakenet.SET_UP == ["faketap"]
    create(host, "two", network="faketap")
    create(host, "three")  # the default backend, fakeuser, on first use too
    assert banger_fakenet.SET_UP == ["faketap", "fakeuser"]


def test_a_backend_whose_attach_failed_is_set_up_again_by_the_next_start(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bridge deleted behind the daemon's back: the failed start's error is followed by a repair on the next one."""

    def gone(self: banger_fakenet.FakeNetwork, request: object) -> None:
        raise OperationFailed("bridge banger0 does not exist")

    create(host, "one", network="faketap")
    with monkeypatch.context() as patch:
        patch.setattr(banger_fakenet.FakeTapNetwork, "attach", gone)
        with pytest.raises(OperationFailed, match="bridge banger0 does not exist"):
            create(host, "two", network="faketap")
    host.vms.start("two", RecordingProgress())
    assert banger_fakenet.SET_UP == ["faketap", "faketap"]
    assert host.vms.get("two").state == VmState.RUNNING


def test_a_running_tap_vm_is_in_the_dns_table(host: Host) -> None:
    create(host, "web", network="faketap")
    create(host, "idle", network="faketap", start=False)
    assert host.vms.running_addresses() == {"web": "10.9.0.2"}


# -- reconcile ---------------------------------------------------------------


def test_reconcile_adopts_a_live_vmm_and_demotes_a_dead_one_keeping_its_disks(host: Host) -> None:
    create(host, "live")
    dead = create(host, "dead")
    live_pid, dead_pid = host.pid("live"), host.pid("dead")
    kill(dead_pid)
    after = host.restarted_daemon()
    assert after.reconcile() == {"adopted": ["live"], "demoted": ["dead"], "removed": []}
    assert after.get("live").state == VmState.RUNNING and after.get("live").pid == live_pid
    shown = after.get("dead")
    assert shown.state == VmState.STOPPED
    assert shown.last_error == f"its bootvmm process (pid {dead_pid}) was gone when the daemon started"
    dead_dir = host.rt.layout.vm_dir(str(dead.id))
    assert (dead_dir / "overlay.ext4").exists() and (dead_dir / "work.ext4").exists()
    assert not (dead_dir / "handles.json").exists() and str(dead.id) not in banger_fakenet.ATTACHED


def test_check_alive_notices_a_vmm_that_died_under_a_running_daemon(host: Host) -> None:
    create(host, "dev")
    kill(host.pid("dev"))
    assert host.vms.check_alive() == ["dev"]
    vm = host.vms.get("dev")
    assert vm.state == VmState.STOPPED and str(vm.last_error).startswith("its VMM process exited")
    assert banger_fakenet.ATTACHED == {} and host.vms.check_alive() == []


def test_reconcile_removes_a_create_that_never_finished(host: Host) -> None:
    vm = create(host, "half", start=False)
    (host.rt.layout.vm_dir(str(vm.id)) / "work.ext4").unlink()
    assert host.restarted_daemon().reconcile()["removed"] == ["half"]
    assert host.vms.all() == [] and host.vm_dirs() == []


def test_handles_of_a_running_vm_survive_a_restart_in_the_file(host: Host) -> None:
    vm = create(host, "dev")
    after = host.restarted_daemon()
    handles = after.handles.read(str(vm.id))
    assert isinstance(handles, VmHandles) and handles == host.vms.handles.cache[str(vm.id)]


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (CreateRequest(name="Bad_Name!"), InvalidName, r"^invalid VM name 'Bad_Name!'"),
        (CreateRequest(name="x", vcpus=0), BangerError, r"^vCPUs must be between 1 and 64, got 0$"),
        (CreateRequest(name="x", memory_mib=64), BangerError, r"^memory must be between 128 and 1048576 MiB"),
        (CreateRequest(name="x", disk_size=1 << 20), BangerError, r"^disk size must be between 1G and 2T, got 1M"),
        (CreateRequest(name="x", image="fake-missing"), NotFound, r"fake-missing"),
        (CreateRequest(name="x", network="nonet"), BangerError, r"^unknown network backend 'nonet'"),
        (CreateRequest(name="x", backend="novmm"), BangerError, r"^unknown VMM backend 'novmm'"),
        (
            CreateRequest(name="x", network="faketap", host_access=True),
            BangerError,
            r"^--host-access only applies to user-mode networking",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_exists(
    host: Host, request_: CreateRequest, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        host.vms.create(request_, RecordingProgress())
    assert host.vms.all() == [] and host.vm_dirs() == [] and banger_fakenet.ATTACHED == {}


def test_a_name_is_taken_once(host: Host) -> None:
    first = create(host, "dup", start=False)
    with pytest.raises(Conflict, match=r"^a VM named 'dup' already exists: pick another --name or delete it$"):
        create(host, "dup", start=False)
    assert [vm.id for vm in host.vms.all()] == [first.id] and host.vm_dirs() == [first.id]


def test_unnamed_vms_get_distinct_generated_names(host: Host) -> None:
    names = {host.vms.create(CreateRequest(start=False), RecordingProgress()).name for _ in range(3)}
    assert len(names) == 3


def test_a_plan_says_each_value_and_where_it_came_from(host: Host) -> None:
    values, sources = host.vms.resolve(CreateRequest(image="fake-later", vcpus=2), image_may_be_missing=True)
    assert values.model_dump() == {
        "vcpus": 2,
        "memory_mib": values.memory_mib,
        "disk_size": values.disk_size,
        "image": "fake-later",
        "image_present": False,
        "kernel": "the image's",
        "network": "fakeuser",
        "host_access": False,
        "backend": "bootvmm",
        "ports": [],
    }
    assert sources == {
        "vcpus": "flag",
        "memory_mib": "host",
        "disk_size": "host",
        "image": "flag",
        "kernel": "known once pulled",
        "network": "config",
        "host_access": "default",
        "backend": "config",
    }


# -- published ports -----------------------------------------------------------


def test_published_ports_are_recorded_with_picked_host_ports_and_handed_to_the_network(host: Host) -> None:
    with socket.socket() as probe:  # a host port free right now, so the fixed mapping can bind it
        probe.bind(("127.0.0.1", 0))
        fixed = probe.getsockname()[1]
    request = CreateRequest(name="web", ports=(f"{fixed}:80", "53/udp"))  # type: ignore[arg-type]  # validator parses
    vm = host.vms.create(request, RecordingProgress())
    tcp, udp = vm.ports
    assert (tcp.host_port, tcp.guest_port, tcp.protocol) == (fixed, 80, "tcp")
    assert udp.host_port is not None and (udp.guest_port, udp.protocol) == (53, "udp")
    assert banger_fakenet.PUBLISHED[vm.id] == (
        PortForward("127.0.0.1", fixed, 80, "tcp"),
        PortForward("127.0.0.1", udp.host_port, 53, "udp"),
    )
    # Picked once: a restart publishes the same host ports, and the record keeps them while stopped.
    host.vms.restart("web", RecordingProgress())
    assert host.restarted_daemon().get("web").ports == vm.ports
    host.vms.stop("web", RecordingProgress())
    assert host.vms.get("web").ports == vm.ports


def test_a_host_port_another_vm_published_is_refused_before_anything_exists(host: Host) -> None:
    first = host.vms.create(CreateRequest(name="one", start=False, ports=("80",)), RecordingProgress())  # type: ignore[arg-type]
    taken = first.ports[0].host_port
    with pytest.raises(Conflict, match=rf"^host port {taken}/tcp is already published by VM one: publish another"):
        host.vms.create(CreateRequest(name="two", ports=(f"{taken}:8080",)), RecordingProgress())  # type: ignore[arg-type]
    assert [vm.name for vm in host.vms.all()] == ["one"] and host.vm_dirs() == [first.id]


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_a_host_port_in_use_on_the_host_is_refused_before_anything_exists(host: Host, protocol: str) -> None:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if protocol == "tcp":
            holder.listen()
        busy = holder.getsockname()[1]
        with pytest.raises(Conflict, match=rf"^host port {busy}/{protocol} on 127.0.0.1 is in use: free it or"):
            host.vms.create(CreateRequest(name="x", ports=(f"{busy}:80/{protocol}",)), RecordingProgress())  # type: ignore[arg-type]
    assert host.vms.all() == [] and host.vm_dirs() == [] and banger_fakenet.ATTACHED == {}


def test_udp_to_an_isolated_user_nic_without_passt_is_refused_before_anything_exists(host: Host) -> None:
    """QEMU's restrict=on drops the guest's UDP replies; usernet_egress = false always means restrict=on."""
    host.rt.config.data["usernet_egress"] = False
    request = CreateRequest(name="x", ports=("5353:53/udp",))  # type: ignore[arg-type]
    with pytest.raises(BangerError, match=r"^UDP ports cannot reach an isolated usernet guest here"):
        host.vms.create(request, RecordingProgress())
    assert host.vms.all() == [] and host.vm_dirs() == []
    opened = CreateRequest(name="x", start=False, host_access=True, ports=("5353:53/udp",))  # type: ignore[arg-type]
    assert host.vms.create(opened, RecordingProgress()).ports[0].protocol == "udp"


# -- warm starts -------------------------------------------------------------


def test_a_cold_first_boot_makes_a_template_in_the_background_unless_cold_or_disabled(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bootvmm saves no guests, so the template side is replaced at its boundary: key and warm."""
    key = TemplateKey("fake-tiny", "a" * 64, "k", "b" * 64, 1, 128, 1 << 30, "bootvmm", "fakeuser", "fake 1.0")
    made: list[TemplateKey] = []
    monkeypatch.setattr(host.vms.templates, "key", lambda *spec: key)
    monkeypatch.setattr(host.vms.templates, "warm", lambda k, progress: made.append(k))

    assert create(host, "first").booted == "cold"
    deadline = time.monotonic() + 10
    while not made and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made == [key]

    host.vms.create(CreateRequest(name="forced", cold=True), RecordingProgress())
    monkeypatch.setitem(host.rt.config.data, "warm_auto", False)
    create(host, "disabled")
    time.sleep(0.2)  # a background warm would have been started synchronously before create returned
    assert made == [key]
    assert host.vms.get("forced").booted == "cold"


def test_a_template_without_guest_agent_is_not_restored_on_a_bridge(
    host: Host, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only the agent can move a restored guest off the template's address: such a VM boots cold instead."""
    key = TemplateKey("fake-tiny", "a" * 64, "k", "b" * 64, 1, 128, 1 << 30, "bootvmm", "faketap", "fake 1.0")
    no_agent = Template(key, tmp_path / "template", "console=ttyS0", "ssh-ed25519 AAAA", 0.0, agent=False)
    copied: list[Template] = []
    monkeypatch.setattr(host.vms.templates, "key", lambda *spec: key)
    monkeypatch.setattr(host.vms.templates, "find", lambda k: no_agent)
    monkeypatch.setattr(host.vms.templates, "copy_disks", lambda template, vm_dir: copied.append(template))
    monkeypatch.setitem(host.rt.config.data, "warm_auto", False)

    assert create(host, "bridged", network="faketap").booted == "cold"
    assert copied == []


def test_warming_on_a_bridge_refuses_while_an_older_vm_holds_the_template_address(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM given 10.9.0.6 before it was kept for templates: a template guest there would answer in its place."""
    key = TemplateKey("fake-tiny", "a" * 64, "k", "b" * 64, 1, 128, 1 << 30, "bootvmm", "faketap", "fake 1.0")
    made: list[TemplateKey] = []

    def warm(k: TemplateKey, progress: object) -> Template:
        made.append(k)
        return Template(k, Path("/nonexistent"), "console=ttyS0", "ssh-ed25519 AAAA", 0.0)

    monkeypatch.setattr(host.vms.templates, "key", lambda *spec: key)
    monkeypatch.setattr(host.vms.templates, "warm", warm)
    old = create(host, "old", network="faketap", start=False)
    with host.rt.database.session() as session:
        row = session.get(Vm, str(old.id))
        assert row is not None
        row.guest_ip = "10.9.0.6"
        session.add(row)
    with pytest.raises(Conflict, match=r"^VM old has 10\.9\.0\.6, the address a warm template boots with on faketap"):
        host.vms.warm_image("fake-tiny", RecordingProgress())
    assert made == []
    host.vms.delete("old", RecordingProgress())
    host.vms.warm_image("fake-tiny", RecordingProgress())
    assert made == [key]
