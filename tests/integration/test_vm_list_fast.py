"""``banger vm list`` answers without click, pydantic or httpx, and says what the click command says."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from banger_core.cli.vm_list import rows
from banger_core.client import transport
from banger_core.common.errors import OperationFailed
from tests.support.daemon import DaemonHarness

BANGER = str(Path(sys.executable).parent / "banger")

#: Runs ``banger ARGV...`` in-process, then reports which of the costly libraries it imported.
IMPORT_PROBE = """
import sys
from banger_core.cli import main
try:
    main()
except SystemExit as exit:
    code = exit.code
loaded = sorted(m for m in ("click", "pydantic", "httpx", "http.client") if m in sys.modules)
print("LOADED:" + ",".join(loaded), file=sys.stderr)
"""


def banger(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BANGER, *argv], env=env, capture_output=True, text=True, timeout=60)


def test_vm_list_starts_the_daemon_and_imports_no_costly_library(daemon: DaemonHarness) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, "vm", "list"], env=daemon.env, capture_output=True, text=True, timeout=60
    )
    assert probe.stdout == "no VMs: `banger vm run` boots one\n"
    notice, loaded = probe.stderr.splitlines()
    assert notice.startswith("banger: started the daemon (pid ") and daemon.pid() is not None
    assert loaded == "LOADED:"


def test_vm_list_table_and_json_match_the_sdk(daemon: DaemonHarness) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    for name in ("alpha", "beta"):
        client.vms.create(name=name, backend="fakevmm", start=False)
    fast = banger(daemon.env, "vm", "list")
    through_click = banger(daemon.env, "-v", "vm", "list")  # any other spelling goes through click
    assert fast.returncode == through_click.returncode == 0
    assert fast.stdout == through_click.stdout and fast.stderr == through_click.stderr == ""
    header, *lines = fast.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "IMAGE", "BACKEND", "NETWORK", "ADDRESS", "PORTS", "VCPU", "MEM", "DISK"]
    vms = client.vms.list()
    assert [line.split()[:7] for line in lines] == [
        [vm.name, vm.state, vm.image, vm.backend, vm.network, vm.address or "-", "-"] for vm in vms
    ]
    as_json = banger(daemon.env, "vm", "list", "--json")
    assert json.loads(as_json.stdout) == [vm.model_dump(mode="json") for vm in vms]


def test_vm_list_reports_a_daemon_of_another_shape_in_one_line() -> None:
    # No address is fine (a VM without one shows "-"); a count sent as a string is not.
    with pytest.raises(OperationFailed) as err:
        rows(
            [
                {
                    "name": "alpha",
                    "state": "created",
                    "image": "i",
                    "backend": "b",
                    "network": "n",
                    "ports": [],
                    "vcpus": "2",
                }
            ]
        )
    assert str(err.value) == (
        "bangerd answered with an unexpected VM list (field 'vcpus' is '2'): "
        "is the daemon another banger version? `banger daemon restart`"
    )
    with pytest.raises(OperationFailed, match=r"field 'ports' is \[\{'guest_port': 80\}\]"):
        rows(
            [
                {
                    "name": "alpha",
                    "state": "created",
                    "image": "i",
                    "backend": "b",
                    "network": "n",
                    "ports": [{"guest_port": 80}],
                }
            ]
        )


def test_vm_list_shows_published_ports_like_vm_show() -> None:
    vm = {"name": "web", "state": "running", "image": "i", "backend": "b", "network": "n", "address": None}
    sized = {"vcpus": 2, "memory_mib": 1024, "disk_size": 1 << 30}
    published = [
        {"host_port": 8080, "guest_port": 80, "protocol": "tcp"},
        {"host_port": 5353, "guest_port": 53, "protocol": "udp"},
    ]
    assert rows([{**vm, "ports": published, **sized}])[0][6] == "8080->80/tcp,5353->53/udp"
    assert rows([{**vm, "ports": [], **sized}])[0][6] == "-"


def test_transport_tells_nobody_listening_from_a_garbled_answer(tmp_path: Path) -> None:
    path = str(tmp_path / "peer.sock")
    with pytest.raises(transport.Unreachable):
        transport.exchange(path, "GET", "/v1/vms", timeout=2.0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)

        def answer_garbage() -> None:
            peer, _ = server.accept()
            with peer:
                peer.recv(4096)
                peer.sendall(b"SSH-2.0-not-http\r\n")

        thread = threading.Thread(target=answer_garbage)
        thread.start()
        with pytest.raises(transport.BadAnswer, match="is not HTTP"):
            transport.exchange(path, "GET", "/v1/vms", timeout=2.0)
        thread.join(5)
