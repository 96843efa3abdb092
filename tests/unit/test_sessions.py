"""SessionManager against the real guest agent code over socket pairs: output pumped into capped host
files, adoption by a new manager (a restarted daemon), the attach bridge, stop, and lost sessions."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from banger_core.common.agent_client import AgentClient
from banger_core.common.errors import AgentError, AgentUnavailable, Conflict, InvalidRequest, NotFound
from banger_core.daemon.layout import Layout
from banger_core.daemon.sessions import SessionManager, append_capped
from banger_hookspecs import guest_agent as wire
from banger_hookspecs.logpump import rotated

from .test_agent_client import TOKEN, PairTransport, serve_agent

pytestmark = pytest.mark.unit
VM = "0123456789abcdef"


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    import tempfile

    runtime = Path(tempfile.mkdtemp(prefix="ss-", dir="/tmp"))
    result = Layout(tmp_path / "state", runtime)
    result.vm_dir(VM).mkdir(parents=True)
    result.vm_run_dir(VM).mkdir(parents=True)
    return result


@pytest.fixture
def guest(tmp_path: Path) -> wire.Agent:
    (tmp_path / "token").write_text(TOKEN)
    return wire.Agent(str(tmp_path / "token"))


@pytest.fixture
def managers(layout: Layout, guest: wire.Agent) -> Iterator[Callable[[], SessionManager]]:
    made: list[SessionManager] = []

    def make() -> SessionManager:
        manager = SessionManager(layout, lambda vm_id: AgentClient(PairTransport(serve_agent(guest)), TOKEN))
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


def wait(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_output_is_pumped_and_the_exit_recorded(managers: Callable[[], SessionManager]) -> None:
    manager = managers()
    manager.start(VM, "job", ["sh", "-c", "echo out; echo err >&2; exit 3"], "/", "none")
    wait(lambda: manager.get(VM, "job").state == "exited", "the exit")
    record = manager.get(VM, "job")
    assert (record.status, record.offsets) == (3, {"stdout": 4, "stderr": 4})
    assert manager.log_path(VM, "job", "stdout").read_bytes() == b"out\n"
    assert manager.log_path(VM, "job", "stderr").read_bytes() == b"err\n"


def test_a_new_manager_adopts_running_sessions(managers: Callable[[], SessionManager], guest: wire.Agent) -> None:
    first = managers()
    first.start(VM, "cat", ["cat"], "/", "pipe")
    first.write(VM, "cat", b"one\n")
    wait(lambda: first.log_path(VM, "cat", "stdout").exists(), "first output")
    first.close()  # the daemon goes away; the guest's session does not
    wait(lambda: not first.pumps, "the old pump to stop")
    guest.sessions["cat"].child.stdin.write(b"two\n")  # type: ignore[union-attr]  # output while no daemon runs
    guest.sessions["cat"].child.stdin.flush()  # type: ignore[union-attr]
    second = managers()
    second.adopt()
    wait(lambda: second.log_path(VM, "cat", "stdout").read_bytes() == b"one\ntwo\n", "adopted output")
    with pytest.raises(Conflict, match="already running"):
        second.start(VM, "cat", ["true"], None, "none")
    assert second.stop(VM, "cat").status == -15


def test_attach_bridges_output_and_input_and_detaching_keeps_it_running(managers: Callable[[], SessionManager]) -> None:
    manager = managers()
    manager.start(VM, "echo", ["cat"], "/", "pipe")
    path = manager.attach_socket(VM, "echo")
    assert path.stat().st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        client.settimeout(30)
        time.sleep(0.3)  # the bridge starts at the current end of the output
        client.sendall(b"ping\n")
        assert client.recv(100) == b"ping\n"
    time.sleep(0.3)
    assert manager.get(VM, "echo").state == "running"
    assert manager.stop(VM, "echo").state == "exited"


def test_session_without_stdin_refuses_input(managers: Callable[[], SessionManager]) -> None:
    manager = managers()
    manager.start(VM, "quiet", ["sleep", "30"], None, "none")
    with pytest.raises(AgentError, match="takes no input"):
        manager.write(VM, "quiet", b"x")
    manager.stop(VM, "quiet")


def test_bad_names_and_unknown_sessions(managers: Callable[[], SessionManager]) -> None:
    manager = managers()
    with pytest.raises(InvalidRequest, match="invalid session name"):
        manager.start(VM, "../x", ["true"], None, "none")
    with pytest.raises(NotFound, match="no session 'nope'"):
        manager.get(VM, "nope")
    with pytest.raises(InvalidRequest, match="invalid stream"):
        manager.log_path(VM, "x", "stdin")


def test_sessions_of_a_vm_whose_agent_is_gone_are_marked_lost(
    layout: Layout, managers: Callable[[], SessionManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = managers()
    manager.start(VM, "long", ["sleep", "30"], None, "none")

    def gone(vm_id: str) -> AgentClient:
        raise AgentUnavailable("the VM is not running: start it first")

    monkeypatch.setattr("banger_core.daemon.sessions.PUMP_INTERVAL", 0.01)
    manager.close()
    wait(lambda: not manager.pumps, "the pump to stop")
    orphaned = SessionManager(layout, gone)
    orphaned.adopt()
    wait(lambda: orphaned.get(VM, "long").state == "lost", "lost", timeout=30)


def test_host_logs_are_capped_with_one_rotation(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    for index in range(25):
        append_capped(path, bytes([65 + index]) * 10, max_bytes=64)
    assert path.stat().st_size <= 64 and rotated(path).stat().st_size == 64
    assert (rotated(path).read_bytes() + path.read_bytes()).endswith(b"Y" * 10)
