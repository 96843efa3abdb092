"""AgentClient against the real guest agent code (banger_hookspecs.guest_agent) over socket pairs and a
Firecracker-style vsock UDS peer, plus hostile peers that break the protocol."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from banger_core.common.agent_client import AgentClient, validate_remote_path
from banger_core.common.agent_identity import GuestIdentity
from banger_core.common.agent_transport import VsockUdsTransport
from banger_core.common.errors import AgentAuthError, AgentError, AgentUnavailable, InvalidRequest
from banger_hookspecs import guest_agent as wire

pytestmark = pytest.mark.unit
TOKEN = "a" * 64


class PairTransport:
    """Each connect() hands the host one end of a socket pair; ``serve`` runs on the other end in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.serve = serve
        self.threads: list[threading.Thread] = []

    def connect(self, timeout: float) -> socket.socket:
        host, guest = socket.socketpair()
        thread = threading.Thread(target=self._run, args=(guest,), daemon=True)
        thread.start()
        self.threads.append(thread)
        return host

    def _run(self, guest: socket.socket) -> None:
        with guest:
            self.serve(guest)

    def describe(self) -> str:
        return "socket pair"


def serve_agent(agent: wire.Agent) -> Callable[[socket.socket], None]:
    def serve(sock: socket.socket) -> None:
        try:
            agent.serve(wire.Conn(sock.fileno()))
        except wire.Disconnected:
            pass

    return serve


@pytest.fixture
def agent(tmp_path: Path) -> wire.Agent:
    token = tmp_path / "agent-token"
    token.write_text(TOKEN + "\n")
    return wire.Agent(str(token))


@pytest.fixture
def client(agent: wire.Agent) -> AgentClient:
    return AgentClient(PairTransport(serve_agent(agent)), TOKEN)


def test_health_reports_the_agent(client: AgentClient) -> None:
    health = client.health(timeout=10)
    assert health["ok"] is True and health["protocol"] == wire.PROTOCOL
    assert isinstance(health["rss_kib"], int) and health["rss_kib"] > 0


def test_exec_streams_output_and_returns_the_exit_status(client: AgentClient) -> None:
    out: list[bytes] = []
    err: list[bytes] = []
    status = client.exec(
        ["sh", "-c", "echo out; echo err >&2; exit 7"], stdout=out.append, stderr=err.append, cwd="/", timeout=30
    )
    assert (status, b"".join(out), b"".join(err)) == (7, b"out\n", b"err\n")


def test_exec_feeds_stdin_and_reports_a_signal(client: AgentClient) -> None:
    out: list[bytes] = []
    data = bytes(range(256)) * 8000  # 2 MB: many frames, far more than a pipe holds
    assert client.exec(["cat"], stdout=out.append, stderr=print, stdin=data, cwd="/", timeout=30) == 0
    assert b"".join(out) == data
    assert client.exec(["sh", "-c", "kill -9 $$"], stdout=out.append, stderr=print, cwd="/", timeout=30) == -9


def test_exec_of_a_missing_program_is_one_clear_error(client: AgentClient) -> None:
    with pytest.raises(AgentError, match="exec /no/such/program failed in the guest: cannot run /no/such/program"):
        client.exec(["/no/such/program"], stdout=print, stderr=print, cwd="/", timeout=30)


def test_put_get_round_trip(client: AgentClient, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 5000  # > 1 MiB: many frames
    remote = str(tmp_path / "guest-file")
    assert client.put(payload, remote, mode=0o640, timeout=30) == len(payload)
    assert (Path(remote).stat().st_mode & 0o777) == 0o640
    local = tmp_path / "back"
    assert client.get(remote, local, max_bytes=len(payload), timeout=30) == len(payload)
    assert local.read_bytes() == payload


def test_get_over_the_limit_leaves_nothing(client: AgentClient, tmp_path: Path) -> None:
    remote = tmp_path / "big"
    remote.write_bytes(b"x" * 100)
    with pytest.raises(AgentError, match="100 bytes in the guest, over the 10-byte limit"):
        client.get(str(remote), tmp_path / "local", max_bytes=10, timeout=30)
    assert not (tmp_path / "local").exists()


def test_get_never_writes_through_a_host_symlink(client: AgentClient, tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"data")
    target = tmp_path / "victim"
    target.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(InvalidRequest, match="already exists"):
        client.get(str(tmp_path / "src"), tmp_path / "link", max_bytes=10, timeout=30)
    assert target.read_bytes() == b"keep"


@pytest.mark.parametrize("path", ["relative", "/a/../etc/shadow", "/a//b", "/a/", "//", "/a\0b"])
def test_remote_paths_are_validated(path: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid guest path"):
        validate_remote_path(path)


def test_wrong_token_is_refused(agent: wire.Agent) -> None:
    client = AgentClient(PairTransport(serve_agent(agent)), "b" * 64)
    with pytest.raises(AgentAuthError, match="refused this VM's token"):
        client.health(timeout=10)


def test_a_rotated_token_replaces_the_old_one(agent: wire.Agent, tmp_path: Path) -> None:
    new = "c" * 64
    AgentClient(PairTransport(serve_agent(agent)), TOKEN).rotate_token(new, timeout=10)
    assert (tmp_path / "agent-token").read_text() == new
    assert (tmp_path / "agent-token").stat().st_mode & 0o777 == 0o600
    with pytest.raises(AgentAuthError, match="refused this VM's token"):
        AgentClient(PairTransport(serve_agent(agent)), TOKEN).health(timeout=10)
    assert AgentClient(PairTransport(serve_agent(agent)), new).health(timeout=10)["ok"] is True


def test_a_bad_new_token_is_refused_and_the_old_one_kept(client: AgentClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="invalid agent token"):
        client.rotate_token("short", timeout=10)
    # The guest checks on its own too (a client that skips the host check).
    with client._session(10) as channel:
        channel.send_json(wire.REQUEST, {"op": "rotate_token", "token": "../x"})
        assert channel.read_answer()["error"] == "ValueError: token must be 64 lowercase hex digits"
    assert client.health(timeout=10)["ok"] is True


def test_missing_token_file_refuses_everyone(tmp_path: Path) -> None:
    client = AgentClient(PairTransport(serve_agent(wire.Agent(str(tmp_path / "none")))), TOKEN)
    with pytest.raises(AgentAuthError):
        client.health(timeout=10)


def test_identity_is_checked_on_the_host_and_again_in_the_guest(client: AgentClient) -> None:
    with pytest.raises(InvalidRequest, match="invalid hostname 'Bad_Name'"):
        client.set_identity(GuestIdentity(hostname="Bad_Name", machine_id="0" * 32, ssh_host_key=b"k"), timeout=10)
    with pytest.raises(InvalidRequest, match="invalid machine-id"):
        client.set_identity(GuestIdentity(hostname="ok", machine_id="xyz", ssh_host_key=b"k"), timeout=10)
    # The guest refuses on its own too, before writing anything (a client that skips the host check).
    with client._session(10) as channel:
        channel.send_json(wire.REQUEST, {"op": "identity", "hostname": "-bad", "machine_id": "0" * 32})
        assert channel.read_answer()["error"] == "ValueError: hostname '-bad' is not a DNS label"


def test_stale_bytes_before_the_sync_answer_are_skipped(agent: wire.Agent) -> None:
    def serve(sock: socket.socket) -> None:
        # What an aborted previous client leaves in a virtio-serial port: a half frame and noise.
        sock.sendall(wire.frame(wire.STDOUT, b"old output")[:7] + b"noise" + wire.frame(wire.EXIT, b"{}"))
        serve_agent(agent)(sock)

    assert AgentClient(PairTransport(serve), TOKEN).health(timeout=10)["ok"] is True


def hostile(reply: Callable[[socket.socket, bytes], None]) -> AgentClient:
    """A peer that answers HELLO properly, then does ``reply(sock, nonce)``."""

    def serve(sock: socket.socket) -> None:
        conn = wire.Conn(sock.fileno())
        _, payload = conn.read_frame()
        nonce = wire._json(payload)["nonce"].encode()
        conn.send(wire.SYNC, nonce + b"1")
        try:
            conn.read_frame()
            reply(sock, nonce)
        except (wire.Disconnected, OSError):
            pass

    return AgentClient(PairTransport(serve), TOKEN)


def test_an_oversized_frame_is_refused_without_reading_it() -> None:
    client = hostile(lambda sock, _: sock.sendall(wire.HEADER.pack(wire.MAGIC, wire.ANSWER, wire.MAX_FRAME + 1)))
    with pytest.raises(AgentError, match=f"exceeds {wire.MAX_FRAME}"):
        client.health(timeout=10)


def test_a_guest_sending_more_than_announced_is_cut_off(tmp_path: Path) -> None:
    def reply(sock: socket.socket, _: bytes) -> None:
        sock.sendall(wire.frame(wire.ANSWER, b'{"ok": true, "size": 4, "mode": 420}'))
        sock.sendall(wire.frame(wire.DATA, b"12345678") + wire.frame(wire.END))

    with pytest.raises(AgentError, match="more than the 4 bytes it announced"):
        hostile(reply).get("/etc/x", tmp_path / "out", max_bytes=100, timeout=10)
    assert not (tmp_path / "out").exists()


def test_a_non_json_answer_is_a_protocol_error() -> None:
    client = hostile(lambda sock, _: sock.sendall(wire.frame(wire.ANSWER, b"\xff not json")))
    with pytest.raises(AgentError, match="answer is not JSON"):
        client.health(timeout=10)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ag-", dir="/tmp") as directory:
        yield Path(directory)


def vsock_peer(path: Path, handler: Callable[[socket.socket], None]) -> threading.Thread:
    """A stand-in for Firecracker's vsock muxer: one connection, then ``handler``."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_vsock_transport_speaks_connect_then_the_agent(short_dir: Path, agent: wire.Agent) -> None:
    seen: list[bytes] = []

    def muxer(conn: socket.socket) -> None:
        line = b""
        while not line.endswith(b"\n"):
            line += conn.recv(1)
        seen.append(line)
        # The agent's SYNC may follow OK in the same segment: the transport must not eat it.
        conn.sendall(b"OK 1073741824\n")
        serve_agent(agent)(conn)

    thread = vsock_peer(short_dir / "v.sock", muxer)
    client = AgentClient(VsockUdsTransport(short_dir / "v.sock", wire.VSOCK_PORT), TOKEN)
    assert client.health(timeout=10)["ok"] is True
    thread.join(10)
    assert seen == [f"CONNECT {wire.VSOCK_PORT}\n".encode()]


@pytest.mark.parametrize(
    ("reply", "message"),
    [(b"", "connection closed after CONNECT 1024"), (b"NOPE\n", "unexpected CONNECT reply"), (b"O" * 100, "longer")],
)
def test_vsock_connect_failures_are_clear(short_dir: Path, reply: bytes, message: str) -> None:
    def muxer(conn: socket.socket) -> None:
        conn.recv(64)
        conn.sendall(reply)

    vsock_peer(short_dir / "v.sock", muxer)
    with pytest.raises(AgentUnavailable, match=message):
        VsockUdsTransport(short_dir / "v.sock", wire.VSOCK_PORT).connect(10)


def test_no_vsock_socket_is_unavailable(short_dir: Path) -> None:
    with pytest.raises(AgentUnavailable, match="cannot reach the guest agent through vsock socket"):
        VsockUdsTransport(short_dir / "missing.sock", wire.VSOCK_PORT).connect(1)


def test_sessions_outlive_their_connection_and_keep_bounded_output(client: AgentClient) -> None:
    script = "read line; echo got $line; echo warn >&2; head -c 3000000 /dev/zero | tr '\\0' x; exit 4"
    assert client.session_start("job", ["sh", "-c", script], cwd="/", stdin=True, timeout=10) > 0
    with pytest.raises(AgentError, match="session 'job' is already running"):
        client.session_start("job", ["true"], cwd="/", stdin=False, timeout=10)
    client.session_write("job", b"hello\n", close=True, timeout=10)  # a new connection each call
    deadline = time.monotonic() + 30
    while (read := client.session_read("job", {"stdout": 0, "stderr": 0}, timeout=10)).running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert read.status == 4 and read.stderr.data == b"warn\n"
    # 3 MB of output: the agent kept the newest SESSION_RING bytes, and says where they start.
    assert read.stdout.end == len(b"got hello\n") + 3_000_000
    assert read.stdout.start == read.stdout.end - wire.SESSION_RING
    assert len(read.stdout.data) == wire.SESSION_READ_MAX and set(read.stdout.data) == {ord("x")}
    assert [s["name"] for s in client.session_list(timeout=10)] == ["job"]
    client.session_forget("job", timeout=10)
    assert client.session_list(timeout=10) == []


def test_a_session_without_stdin_refuses_input_and_stops_on_signal(client: AgentClient) -> None:
    client.session_start("sleeper", ["sleep", "60"], cwd="/", stdin=False, timeout=10)
    with pytest.raises(AgentError, match="takes no input"):
        client.session_write("sleeper", b"x", timeout=10)
    client.session_signal("sleeper", 15, timeout=10)
    deadline = time.monotonic() + 30
    while (read := client.session_read("sleeper", {}, timeout=10)).running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert read.status == -15


@pytest.mark.parametrize("name", ["Bad", "-x", "a b", ""])
def test_session_names_are_validated_in_the_guest(client: AgentClient, name: str) -> None:
    with pytest.raises(AgentError, match="must be a DNS label"):
        client.session_start(name, ["true"], cwd="/", stdin=False, timeout=10)


def test_one_hello_authorises_one_request_only(agent: wire.Agent) -> None:
    """A later client on the same virtio-serial stream cannot ride on an earlier client's HELLO."""
    host, guest = socket.socketpair()
    thread = threading.Thread(target=serve_agent(agent), args=(guest,), daemon=True)
    thread.start()
    with host, guest:
        conn = wire.Conn(host.fileno())
        conn.send_json(wire.HELLO, {"token": TOKEN, "nonce": "n" * wire.NONCE_LEN})
        assert conn.read_frame() == (wire.SYNC, b"n" * wire.NONCE_LEN + b"1")
        conn.send_json(wire.REQUEST, {"op": "health"})
        assert wire._json(conn.read_frame()[1])["ok"] is True
        conn.send_json(wire.REQUEST, {"op": "health"})  # no new HELLO
        assert wire._json(conn.read_frame()[1]) == {"ok": False, "error": "not authenticated"}
