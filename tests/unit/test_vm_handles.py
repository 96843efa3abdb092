"""handles.json: typed handles, in the file format every daemon version reads (so an upgrade re-adopts VMs)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from banger_core.daemon.layout import Layout
from banger_core.daemon.vm.handles import HandleStore, VmHandles
from banger_hookspecs import GuestNetConfig, NetAttachment, NicSpec, PortForward, VmProcess

pytestmark = pytest.mark.unit

VM_ID = "0123456789abcdef"
ATTACHMENT = NetAttachment(
    backend="usernet",
    nic=NicSpec("user", "52:54:00:12:34:56", forwards=(PortForward("127.0.0.1", 40022, 22),), host_access=True),
    guest=GuestNetConfig("10.0.2.15", 24, "10.0.2.2", "10.0.2.3"),
    ssh_host="127.0.0.1",
    ssh_port=40022,
    dns_address=None,
    state={"ssh_port": "40022"},
)
PROCESS = VmProcess("qemu", 4242, 987654, "/run/banger/vms/x/qmp.sock", {"passt_pid": "4243"})


@pytest.fixture
def store(tmp_path: Path) -> HandleStore:
    layout = Layout(tmp_path / "state", tmp_path / "run")
    layout.vm_dir(VM_ID).mkdir(parents=True)
    return HandleStore(layout)


def test_handles_round_trip_through_the_file(store: HandleStore) -> None:
    store.write(VM_ID, VmHandles(net=ATTACHMENT, vmm=PROCESS))
    fresh = HandleStore(store.layout)  # a restarted daemon: nothing cached
    assert fresh.read(VM_ID) == VmHandles(net=ATTACHMENT, vmm=PROCESS)
    assert store.path(VM_ID).stat().st_mode & 0o777 == 0o600


def test_the_file_is_what_the_dict_based_daemon_wrote(store: HandleStore) -> None:
    """Byte for byte the JSON of the contract dataclasses, as daemons before typed handles wrote it."""
    store.write(VM_ID, VmHandles(net=ATTACHMENT))
    old_form = {"net": json.loads(json.dumps(asdict(ATTACHMENT), default=str))}
    assert json.loads(store.path(VM_ID).read_text()) == old_form
    store.write(VM_ID, VmHandles(net=ATTACHMENT, vmm=PROCESS))
    assert json.loads(store.path(VM_ID).read_text()) == {**old_form, "vmm": asdict(PROCESS)}


def test_a_minimal_file_from_an_older_daemon_loads(store: HandleStore) -> None:
    store.path(VM_ID).write_text(
        json.dumps(
            {
                "vmm": {"backend": "fakevmm", "pid": 10, "start_time": 20, "control_socket": "/tmp/s"},
                "net": {
                    "backend": "usernet",
                    "nic": {"kind": "user", "mac": "52:54:00:00:00:01", "forwards": []},
                    "guest": {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2", "dns": "10.0.2.3"},
                    "ssh_host": "127.0.0.1",
                    "ssh_port": 2200,
                },
            }
        )
    )
    handles = store.read(VM_ID)
    assert handles is not None and handles.vmm == VmProcess("fakevmm", 10, 20, "/tmp/s")
    assert handles.net is not None and handles.net.dns_address is None and handles.net.nic.forwards == ()


@pytest.mark.parametrize(
    "content",
    ["", "[]", "{}", '{"vmm": {"backend": "qemu", "pid": "not a pid"}}', '{"net": {"backend": "usernet"}}'],
)
def test_an_unreadable_or_empty_file_means_no_handles(store: HandleStore, content: str) -> None:
    store.path(VM_ID).write_text(content)
    assert store.read(VM_ID) is None
    assert store.path(VM_ID).exists()  # kept for a human to look at; reconcile only demotes the VM


def test_drop_removes_file_and_cache(store: HandleStore) -> None:
    store.write(VM_ID, VmHandles(vmm=PROCESS))
    store.drop(VM_ID)
    assert store.read(VM_ID) is None and not store.path(VM_ID).exists()
