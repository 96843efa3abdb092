"""Published ports: ``-p`` parsing, the request as the SDK sends it, and the CLI's one-line refusals.

The daemon-side checks (in use, published by another VM, nothing created)
are in tests/unit/test_vm_service.py; the guest end to end in tests/e2e/test_ports.py.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from banger_core.api.ports import PortMapping, parse_publish
from banger_core.api.requests import CreateRequest
from banger_core.api.validation import build_request
from banger_core.cli.app import cli
from banger_core.client.sdk import _body
from banger_core.common.errors import InvalidRequest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("8080:80", PortMapping(host_port=8080, guest_port=80)),
        ("80", PortMapping(guest_port=80)),
        ("5353:53/udp", PortMapping(host_port=5353, guest_port=53, protocol="udp")),
        ("53/UDP", PortMapping(guest_port=53, protocol="udp")),
        ("65535:1/tcp", PortMapping(host_port=65535, guest_port=1)),
    ],
)
def test_publish_specs_parse(spec: str, expected: PortMapping) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", r"^bad port '': write HOST:GUEST \(8080:80\), GUEST"),
        ("http", r"^bad port 'http'"),
        ("0.0.0.0:80:80", r"^bad port '0.0.0.0:80:80'"),
        ("8080:", r"^bad port '8080:'"),
        ("80/sctp", r"^bad port '80/sctp': protocol 'sctp' is neither tcp nor udp$"),
        ("70000:80", r"^host port 70000 in '70000:80' is out of range: ports are 1-65535$"),
        ("8080:0", r"^guest port 0 in '8080:0' is out of range"),
    ],
)
def test_bad_publish_specs_say_how_to_write_one(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_publish(spec)


def test_a_picked_port_survives_the_sdk_body_and_the_daemon_parse() -> None:
    """The SDK drops None fields from a body: a ``-p GUEST`` mapping must still parse on the daemon side."""
    request = build_request(CreateRequest, {"ports": ["80", "5353:53/udp"]})
    sent = json.dumps(_body(request)).encode()
    assert CreateRequest.from_json(sent).ports == (
        PortMapping(guest_port=80),
        PortMapping(host_port=5353, guest_port=53, protocol="udp"),
    )


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        (["8080:80", "8080:81"], "ports: host port 8080/tcp is published twice: publish it once"),
        ([5], "ports: each port is a string like"),
        ([{"guest_port": 80, "host_address": "0.0.0.0"}], "ports.host_address"),
    ],
)
def test_bad_port_lists_are_one_invalid_request_line(ports: list[object], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_request(CreateRequest, {"ports": ports})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_same_port_number_on_tcp_and_udp_is_two_ports() -> None:
    assert len(build_request(CreateRequest, {"ports": ["53:53", "53:53/udp"]}).ports) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "80:80:80"], "Invalid value for '-p' / '--publish': bad port '80:80:80'"),
        (["-p", "8080:80", "-p", "8080:81"], "ports: host port 8080/tcp is published twice"),
    ],
)
def test_the_cli_refuses_bad_ports_before_asking_the_daemon(args: list[str], message: str) -> None:
    """No daemon runs here: a request would fail differently (and start one)."""
    result = CliRunner().invoke(cli, ["vm", "create", "--name", "x", *args])
    assert result.exit_code != 0 and message in result.output


@pytest.mark.parametrize("command", ["create", "run"])
def test_both_create_and_run_take_publish(command: str) -> None:
    result = CliRunner().invoke(cli, ["vm", command, "--help"])
    assert result.exit_code == 0 and "-p, --publish HOST:GUEST" in result.output
