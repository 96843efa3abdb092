"""Unit tests: the console log pump caps and rotates, and is never its starter's child."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from banger_hookspecs.logpump import pump, rotated, start_log_pump

pytestmark = pytest.mark.unit


def wait_for_content(path: Path, expected: bytes, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes() == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never held the expected {len(expected)} bytes")


def children_of_this_process() -> list[int]:
    me = str(os.getpid())
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_more_than_the_cap_leaves_the_cap_plus_one_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    data = bytes(range(256)) * 17 + b"tail"  # 4356 bytes: four full files of 1000 and a part
    before = children_of_this_process()
    fd = start_log_pump(log, max_bytes=1000)
    try:
        # Detached at once: nothing for this process to reap, now or when the pump exits.
        assert children_of_this_process() == before
        os.write(fd, data)
    finally:
        os.close(fd)
    wait_for_content(log, data[4000:])
    assert rotated(log).read_bytes() == data[3000:4000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serial.log", "serial.log.1"]


def test_pump_appends_and_rotates_at_exactly_the_cap(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"x" * 6)
    read_end, write_end = os.pipe()
    os.write(write_end, b"0123456789")
    os.close(write_end)
    pump(read_end, log, max_bytes=8)
    os.close(read_end)
    assert rotated(log).read_bytes() == b"xxxxxx01"
    assert log.read_bytes() == b"23456789"
