"""Request parsing and operation dispatch, without a daemon (the daemon-level table is in
tests/integration/test_api_validation.py)."""

from __future__ import annotations

import pytest

from banger_core.api.requests import CreateRequest
from banger_core.cli.vm_cmd import LIFECYCLE, _lifecycle
from banger_core.common.errors import InvalidRequest
from banger_core.daemon.app import VM_OPS, _vm_op
from banger_core.daemon.vm import VmService


def test_create_request_is_typed_and_sizes_come_back_in_bytes() -> None:
    req = CreateRequest.from_json(b'{"name": "dev", "vcpus": 2, "disk_size": "16G", "start": false}')
    assert req == CreateRequest(name="dev", vcpus=2, disk_size=16 << 30, start=False)
    assert CreateRequest.from_json(b"") == CreateRequest()
    assert CreateRequest.from_json(b'{"disk_size": 1073741824}').disk_size == 1 << 30


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"start": "false"}', 'start: expected true or false, got "false"'),
        (b'{"vcpus": true}', "vcpus: expected an integer, got true"),
        (b'{"vcpus": true, "image": 1}', "image: expected a string, got 1; vcpus: expected an integer, got true"),
        (b'{"remove_on_exit": "yes", "x": ' + b"[1]" + b"}", 'remove_on_exit: expected true or false, got "yes"; '),
        (b'{"name": "' + b"n" * 200 + b'", "vcpus": "' + b"v" * 200 + b'"}', 'vcpus: expected an integer, got "vvvv'),
    ],
)
def test_create_request_names_every_bad_field_in_one_line(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CreateRequest.from_json(body)
    text = str(caught.value)
    assert message in text and "\n" not in text and len(text) < 400


def test_vm_ops_are_an_explicit_table() -> None:
    assert VM_OPS["start"].run is VmService.start and VM_OPS["start"].flags == ()
    assert VM_OPS["stop"].run is VmService.stop and VM_OPS["stop"].flags == ("force",)
    assert VM_OPS["restart"].run is VmService.restart and VM_OPS["restart"].flags == ()
    assert VM_OPS["delete"].run is VmService.delete and VM_OPS["delete"].flags == ("force",)
    assert [name for name, op in VM_OPS.items() if op.run is VmService.delete] == ["delete"]
    assert set(LIFECYCLE) == set(VM_OPS)


@pytest.mark.parametrize("op", ["snapshot", "", "Delete", "stop "])
def test_unknown_operations_fail_when_the_route_or_command_is_built(op: str) -> None:
    with pytest.raises(ValueError, match=r"^unknown VM operation .* \(known: start, stop, restart, delete\)$"):
        _vm_op(op)
    with pytest.raises(ValueError, match=r"^unknown VM operation .* \(known: start, stop, restart, delete\)$"):
        _lifecycle(op, "Do something to VMs.")
