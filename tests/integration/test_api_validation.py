"""Malformed requests against a real bangerd over its Unix socket: 400/413 with one line, never a 500.

Each request is one the old daemon mishandled or could mishandle: a string
``"false"`` that booted a VM, ``true`` stored as 1 vCPU, lists where strings
go, sizes that overflowed into a traceback, bodies that grew the daemon's
memory without bound.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from banger_core.cli.app import App
from banger_core.cli.vm_cmd import _lifecycle
from banger_core.common.errors import InvalidRequest, NotFound, RequestTooLarge
from banger_core.common.names import InvalidName
from banger_core.common.plugins import PluginError
from banger_core.daemon.app import _vm_op
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent
MiB = 1 << 20
#: What every create below would otherwise need to succeed (image pulled by the fixture, the fake VMM).
OK_CREATE = {"name": "valid", "backend": "fakevmm"}

MALFORMED: list[tuple[str, str, Any, int, str]] = [
    # (method, path, body (bytes = raw), status, the one-line message must contain)
    ("POST", "/v1/vms", {**OK_CREATE, "start": "false"}, 400, 'start: expected true or false, got "false"'),
    ("POST", "/v1/vms", {**OK_CREATE, "start": 0}, 400, "start: expected true or false, got 0"),
    ("POST", "/v1/vms", {**OK_CREATE, "vcpus": True}, 400, "vcpus: expected an integer, got true"),
    ("POST", "/v1/vms", {**OK_CREATE, "vcpus": 2.0}, 400, "vcpus: expected an integer, got 2.0"),
    ("POST", "/v1/vms", {**OK_CREATE, "vcpus": "2"}, 400, 'vcpus: expected an integer, got "2"'),
    ("POST", "/v1/vms", {**OK_CREATE, "network": ["x"]}, 400, 'network: expected a string, got ["x"]'),
    ("POST", "/v1/vms", {**OK_CREATE, "name": {"a": 1}}, 400, "name: expected a string, got {"),
    ("POST", "/v1/vms", {**OK_CREATE, "memory_mib": "2G"}, 400, 'memory_mib: expected an integer, got "2G"'),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": 1e9}, 400, "disk_size: expected a size"),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": "1e9"}, 400, "disk_size: '1e9' is not a size"),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": "12Q"}, 400, "disk_size: '12Q' is not a size"),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": "-1"}, 400, "disk_size: '-1' is not a size"),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": -1}, 400, "disk_size: a size must be more than 0, got -1"),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": 0}, 400, "disk_size: a size must be more than 0, got 0"),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": "9" * 30 + "T"}, 400, "is too large"),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": "9" * 400 + "G"}, 400, "is not a size"),
    ("POST", "/v1/vms", {**OK_CREATE, "disk_size": True}, 400, "disk_size: expected a size"),
    ("POST", "/v1/vms", {**OK_CREATE, "colour": "red"}, 400, "colour: unknown field (accepted: "),
    ("POST", "/v1/vms", ["start"], 400, "request body must be a JSON object"),
    ("POST", "/v1/vms", b"{not json", 400, "request body is not valid JSON"),
    ("POST", "/v1/vms", b'{"name": "\xff"}', 400, "request body is not valid JSON"),
    ("POST", "/v1/vms", b"[" * 200_000, 400, "request body is not valid JSON"),
    ("POST", "/v1/vms", b'{"vcpus": ' + b"9" * 5000 + b"}", 400, "request body is not valid JSON"),
    ("POST", "/v1/vms/plan", {"vcpus": True}, 400, "vcpus: expected an integer, got true"),
    ("POST", "/v1/vms/plan", {"disk_size": "1e9"}, 400, "disk_size: '1e9' is not a size"),
    ("POST", "/v1/vms/plan", {"image": 7}, 400, "image: expected a string, got 7"),
    ("POST", "/v1/images/pull", {"ref": "fake-tiny", "force": "yes"}, 400, 'force: expected true or false, got "yes"'),
    ("POST", "/v1/images/pull", {"ref": ["fake-tiny"]}, 400, 'ref: expected a string, got ["fake-tiny"]'),
    ("POST", "/v1/images/pull", {"ref": "fake-tiny", "source": 1}, 400, "source: expected a string, got 1"),
    ("POST", "/v1/images/pull", {"ref": "fake-tiny", "provider": "x"}, 400, "provider: unknown field"),
    ("POST", "/v1/images/pull", {"ref": "fake-tiny", "kernel_ref": 6}, 400, "kernel_ref: expected a string, got 6"),
    ("POST", "/v1/images/register", {"name": "x", "rootfs": ["/a"]}, 400, 'rootfs: expected a string, got ["/a"]'),
    ("POST", "/v1/images/register", {"name": "x", "path": "/a"}, 400, "path: unknown field"),
    ("POST", "/v1/images/register", {"rootfs": "/a"}, 400, "image register needs a name and a rootfs"),
    ("POST", "/v1/kernels/pull", {"ref": "fake-kernel", "force": 1}, 400, "force: expected true or false, got 1"),
    ("POST", "/v1/kernels/pull", {"ref": "fake-kernel", "source": "x"}, 400, "source: unknown field"),
    ("POST", "/v1/vms/keep/stop", {"force": True}, 400, "takes no request body"),
    ("POST", "/v1/vms/keep/stop?force=maybe", None, 400, "force: expected 1/true/yes or 0/false/no, got 'maybe'"),
    ("POST", "/v1/vms/keep/start?force=1", None, 400, "unknown query parameter 'force'"),
    ("DELETE", "/v1/vms/keep?forse=1", None, 400, "unknown query parameter 'forse' (accepted: force)"),
    ("DELETE", "/v1/vms/keep?force=1&force=0", None, 400, "force: given more than once"),
    ("POST", "/v1/daemon/shutdown", {"now": True}, 400, "takes no request body"),
    ("GET", "/v1/images?available=2", None, 400, "available: expected 1/true/yes or 0/false/no, got '2'"),
    ("POST", "/v1/vms/keep/explode", None, 404, "no API route POST /v1/vms/keep/explode"),
    ("PUT", "/v1/vms", None, 405, "PUT is not allowed on /v1/vms (allowed: GET, POST)"),
]


def socket_client(h: DaemonHarness) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(h.runtime / "bangerd.sock")), base_url="http://bangerd")


def send(http: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    if body is None:
        return http.request(method, path)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.request(method, path, content=content, headers={"content-type": "application/json"})


@pytest.fixture
def ready(daemon: DaemonHarness) -> DaemonHarness:
    """A running daemon with the fake image pulled and one stopped VM, ``keep``."""
    client = daemon.client()
    client.images.pull("fake-tiny")
    client.vms.create(name="keep", backend="fakevmm", start=False)
    return daemon


def assert_intact(h: DaemonHarness) -> None:
    client = h.client(autostart=False)
    assert [vm.name for vm in client.vms.list()] == ["keep"]
    assert client.vms.get("keep").state == "created"
    assert [i.name for i in client.images.list()] == ["fake-tiny"]
    assert client.daemon.status().vms == 1
    log = (h.state / "logs" / "bangerd.log").read_text()
    assert "Traceback" not in log and " ERROR " not in log


def test_malformed_requests_get_one_line_errors_and_change_nothing(ready: DaemonHarness) -> None:
    pid = ready.pid()
    wrong: list[str] = []
    with socket_client(ready) as http:
        for method, path, body, status, expected in MALFORMED:
            response = send(http, method, path, body)
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                wrong.append(f"{method} {path} {body!r:.60}: {response.status_code} {response.text[:200]!r}")
                continue
            message = error["message"]
            if response.status_code != status or expected not in message or "\n" in message:
                wrong.append(f"{method} {path} {body!r:.60}: {response.status_code} {message!r}")
    assert wrong == []
    assert ready.pid() == pid
    assert_intact(ready)


def test_a_400_mb_body_is_refused_without_being_read(ready: DaemonHarness) -> None:
    """Content-Length over the cap: 413 at once; the daemon's peak memory does not follow the body."""
    pid = ready.pid()
    assert pid is not None
    peak_before = peak_rss(pid)
    head = (
        "POST /v1/vms HTTP/1.1\r\nHost: bangerd\r\nContent-Type: application/json\r\n"
        f"Content-Length: {400 * MiB}\r\n\r\n"
    )
    status, body, sent = raw_exchange(ready, head.encode(), chunks=400, chunk=b'{"x": "' + b"a" * (MiB - 7))
    assert status == 413
    assert sent < 16, f"the daemon read {sent} MiB before hanging up"
    assert json.loads(body)["error"] == {
        "type": "RequestTooLarge",
        "message": "request body is larger than 1 MiB: send less (VM options, image and kernel refs are small)",
    }
    assert peak_rss(pid) < peak_before + 64 * MiB
    assert_intact(ready)


def test_a_chunked_body_is_cut_off_at_the_cap(ready: DaemonHarness) -> None:
    """No Content-Length (chunked): the daemon counts while reading and stops at 1 MiB."""
    pid = ready.pid()
    assert pid is not None
    peak_before = peak_rss(pid)
    head = b"POST /v1/images/pull HTTP/1.1\r\nHost: bangerd\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = b" " * (256 << 10)
    chunk = f"{len(data):x}\r\n".encode() + data + b"\r\n"
    status, body, sent = raw_exchange(ready, head, chunks=400 * 4, chunk=chunk)
    assert status == 413
    assert sent < 64, f"the daemon read {sent // 4} MiB before hanging up"
    assert json.loads(body)["error"]["type"] == "RequestTooLarge"
    assert peak_rss(pid) < peak_before + 64 * MiB
    assert_intact(ready)


def test_bodies_just_under_the_cap_are_read(ready: DaemonHarness) -> None:
    padded = json.dumps({"vcpus": True}).encode() + b" " * (MiB - 20)
    with socket_client(ready) as http:
        response = send(http, "POST", "/v1/vms/plan", padded)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "vcpus: expected an integer, got true"


def test_sdk_raises_the_daemons_one_line(ready: DaemonHarness) -> None:
    client = ready.client()
    with pytest.raises(RequestTooLarge, match=r"^request body is larger than 1 MiB: "):
        client.vms.create(name="x" * (2 * MiB), start=False)
    with pytest.raises(InvalidRequest, match=r"^vcpus: expected an integer, got true$"):
        client.vms.create(name="never", vcpus=True, start=False)
    with pytest.raises(InvalidRequest, match=r'^force: expected true or false, got "yes"$'):
        client.images.pull("fake-tiny", force="yes")  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no VM named 'never'"):
        client.vms.get("never")
    assert_intact(ready)


def test_daemon_errors_reach_the_sdk_as_their_own_class(ready: DaemonHarness) -> None:
    """Not OperationFailed: the class the daemon raised, with its line (and the CLI's exit code and line)."""
    client = ready.client()
    with pytest.raises(InvalidName, match=r"^invalid VM name 'Not_A_Label'") as invalid:
        client.vms.create(name="Not_A_Label", backend="fakevmm", start=False)
    assert type(invalid.value) is InvalidName
    with pytest.raises(PluginError, match=r"^unknown VMM backend 'warp-drive' \(known: ") as plugin:
        client.vms.plan(backend="warp-drive")
    assert type(plugin.value) is PluginError
    result = subprocess.run(
        [BIN / "banger", "vm", "create", "--name", "Not_A_Label", "--no-start"],
        env=ready.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stderr.startswith("banger: error: invalid VM name 'Not_A_Label'")
    assert_intact(ready)


def test_an_unknown_operation_never_deletes(ready: DaemonHarness) -> None:
    """Dispatch used to fall through to delete for any op that was not start/stop/restart."""
    with pytest.raises(ValueError, match=r"^unknown VM operation 'snapshot'"):
        snapshot = _lifecycle("snapshot", "Snapshot VMs.")
        # Reached only if the command could be built: what the old fall-through did with it.
        CliRunner().invoke(snapshot, ["keep"], obj=App(env=dict(ready.env)), env=ready.env)
    with pytest.raises(ValueError, match=r"^unknown VM operation 'snapshot'"):
        _vm_op("snapshot")
    with socket_client(ready) as http:
        response = http.post("/v1/vms/keep/snapshot")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == ("no API route POST /v1/vms/keep/snapshot: docs/sdk.md lists the API")
    with pytest.raises(NotFound, match=r"^no API route POST /v1/vms/keep/snapshot"):
        ready.client().request("POST", "/v1/vms/keep/snapshot")
    assert_intact(ready)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--disk-size", "1e9", "'1e9' is not a size: use a whole number of bytes"),
        ("--disk-size", "-1", "'-1' is not a size"),
        ("--disk-size", "12Q", "'12Q' is not a size"),
        ("--disk-size", "0", "a size must be more than 0, got 0"),
        ("--disk-size", "9" * 30 + "T", "is too large: sizes go up to 1024T"),
        ("--memory", "0", "a size must be more than 0"),
        ("--memory", "1e9", "'1e9' is not a size: use a whole number of MiB (2048)"),
        ("--memory", "-1", "'-1' is not a size: use a whole number of MiB"),
        ("--memory", "512K", "512K is less than 1 MiB"),
        ("--memory", "9" * 30, "is too large"),
    ],
)
def test_cli_size_options_fail_before_any_request(daemon: DaemonHarness, option: str, value: str, message: str) -> None:
    """Parsed by the CLI itself: no daemon is even started."""
    for command in (["vm", "create", "--no-start"], ["vm", "run", "--dry-run"]):
        result = subprocess.run(
            [BIN / "banger", *command, option, value], env=daemon.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"Error: Invalid value for '{option}': ") and message in last, last
        assert "Traceback" not in result.stderr
    assert daemon.pid() is None


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def raw_exchange(h: DaemonHarness, head: bytes, *, chunks: int, chunk: bytes) -> tuple[int, bytes, int]:
    """Send ``head`` then up to ``chunks`` copies of ``chunk`` until the daemon hangs up.

    Returns the answer's status and body, and how many chunks went out before the hang-up.
    """
    sent = 0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(h.runtime / "bangerd.sock"))
    try:
        sock.sendall(head)
        for _ in range(chunks):
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    finally:
        sock.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body, sent
