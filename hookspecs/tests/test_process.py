"""Unit tests: finding, signalling and reaping VMM processes by pid + start time."""

from __future__ import annotations

import doctest
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from banger_hookspecs import process
from banger_hookspecs.process import (
    format_log_tails,
    is_same_process,
    read_proc_stat,
    remove_stale_socket,
    signal_process,
    tail_lines,
    terminate,
    wait_gone,
)

pytestmark = pytest.mark.unit


def test_doctests() -> None:
    assert doctest.testmod(process).failed == 0


def test_stat_parsing_survives_parentheses_and_spaces_in_the_command_name(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    fields = ["S", *[str(n) for n in range(4, 22)], "987654", "0"]
    (tmp_path / "42" / "stat").write_text(f"42 (qemu (x) y) {' '.join(fields)}\n")
    stat = read_proc_stat(42, proc=tmp_path)
    assert stat is not None and (stat.state, stat.start_time, stat.zombie) == ("S", 987654, False)
    assert read_proc_stat(43, proc=tmp_path) is None


def test_a_child_is_the_same_process_only_with_its_start_time_and_only_while_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stat = read_proc_stat(child.pid)
        assert stat is not None
        assert is_same_process(child.pid, stat.start_time)
        assert not is_same_process(child.pid, stat.start_time + 1)
        # A wrong start time means "some other process now has this pid": never signalled.
        assert not signal_process(child.pid, stat.start_time + 1, signal.SIGKILL)
        assert child.poll() is None
        assert not wait_gone(child.pid, stat.start_time, 0.1)
        assert signal_process(child.pid, stat.start_time, signal.SIGTERM)
        assert wait_gone(child.pid, stat.start_time, 10)
        # Reaped by wait_gone: no zombie left behind, and the pid no longer matches.
        assert read_proc_stat(child.pid) is None
        assert not is_same_process(child.pid, stat.start_time)
        assert not signal_process(child.pid, stat.start_time, signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_zombie_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = read_proc_stat(child.pid)
    assert stat is not None
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert read_proc_stat(child.pid).zombie  # type: ignore[union-attr]
    assert not is_same_process(child.pid, stat.start_time)
    assert read_proc_stat(child.pid) is None  # is_same_process reaped it
    child.wait()


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"old\n" * 10000 + b"one\r\n\n\x1b[0mtwo\xff\nthree\tdone\n")
    assert tail_lines(log, 3) == ["one", "[0mtwo\ufffd", "three\tdone"]
    assert tail_lines(log, 0) == []
    assert tail_lines(tmp_path / "missing.log") == []
    assert len(tail_lines(log, 100000, max_bytes=40)) <= 10


# os.write in the handler: a print() there can land inside the main thread's print
# ("reentrant call inside BufferedWriter") and kill the child before SIGKILL does.
CHILD_SURVIVING_SIGTERM = """
import os, signal, time
signal.signal(signal.SIGTERM, lambda *_: os.write(1, b"got SIGTERM\\n"))
os.write(1, b"ready\\n")
time.sleep(60)
"""


def test_terminate_escalates_to_sigkill_when_sigterm_is_ignored() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD_SURVIVING_SIGTERM], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        stat = read_proc_stat(child.pid)
        assert stat is not None
        assert terminate(child.pid, stat.start_time, grace=0.5)
        # It saw SIGTERM, survived it, and is gone all the same: SIGKILL followed.
        assert child.stdout.read() == "got SIGTERM\n"
        assert not is_same_process(child.pid, stat.start_time)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_format_log_tails(tmp_path: Path) -> None:
    (tmp_path / "vmm.log").write_text("a\nb\nc\n")
    (tmp_path / "empty.log").write_text("")
    logs = {"VMM log": str(tmp_path / "vmm.log"), "serial console": str(tmp_path / "empty.log"), "none": None}
    assert format_log_tails(logs, lines=2) == f"VMM log ({tmp_path}/vmm.log):\n  b\n  c"
    assert format_log_tails({"x": str(tmp_path / "missing")}) == ""


def test_remove_stale_socket_removes_only_sockets(tmp_path: Path) -> None:
    sock_path = tmp_path / "vm.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me")
    remove_stale_socket(sock_path)
    remove_stale_socket(regular)
    remove_stale_socket(tmp_path / "missing.sock")
    assert not sock_path.exists()
    assert regular.read_text() == "keep me"


def test_reaping_a_recycled_pid_never_steals_another_childs_exit_status() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    stat = read_proc_stat(child.pid)
    assert stat is not None
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    # Some other process's start time: this zombie is not the VMM we mean, leave it to its own waiter.
    assert not is_same_process(child.pid, stat.start_time + 1)
    wait_gone(child.pid, stat.start_time + 1, 0.1)
    assert read_proc_stat(child.pid).zombie  # type: ignore[union-attr]
    assert child.wait() == 7


# The main thread ends first (pthread_exit) while another thread lives on for a moment, as QEMU's
# threads do when it is killed: the process shows as a zombie before it can be reaped.
THREADS_OUTLIVE_MAIN = """
import ctypes, threading, time
threading.Thread(target=lambda: time.sleep(1.5)).start()
ctypes.CDLL(None).pthread_exit(None)
"""


def test_wait_gone_reaps_a_multithreaded_child_whose_main_thread_exited_first() -> None:
    child = subprocess.Popen([sys.executable, "-c", THREADS_OUTLIVE_MAIN])
    try:
        start = read_proc_stat(child.pid)
        assert start is not None
        for _ in range(200):  # bounded: until the main thread has exited
            stat = read_proc_stat(child.pid)
            if stat is not None and stat.zombie:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the child's main thread never exited")
        assert wait_gone(child.pid, start.start_time, 10.0)
        assert not Path(f"/proc/{child.pid}").exists(), "still a <defunct> entry: it was never reaped"
    finally:
        if Path(f"/proc/{child.pid}").exists():
            child.kill()
            child.wait()
