"""passt: its argv, and the process lifecycle with the real ``passt`` binary (no guest needed)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from banger_hookspecs import NicSpec, PortForward
from banger_hookspecs.process import is_same_process, read_proc_stat
from banger_qemu.argv import QemuOptions, build_argv
from banger_qemu.passt import (
    PasstError,
    find_passt,
    has_default_route,
    passt_argv,
    start_passt,
    stop_passt,
    uses_passt,
)

pytestmark = pytest.mark.unit

MAC = "52:54:00:aa:bb:cc"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_passt_argv_is_exact(tmp_path: Path) -> None:
    nic = NicSpec(kind="user", mac=MAC, forwards=(PortForward("127.0.0.1", 40022, 22),))
    assert passt_argv("/usr/bin/passt", nic, tmp_path / "passt.sock", 1000, 1001) == [
        "/usr/bin/passt",
        *("--foreground", "--stderr", "--one-off", "--runas", "1000:1001"),
        # No guest address is mapped to host loopback; guest addressing is slirp's.
        *("--no-map-gw", "--ipv4-only", "--address", "10.0.2.15", "--netmask", "24", "--gateway", "10.0.2.2"),
        *("--dns-forward", "10.0.2.3", "--socket", str(tmp_path / "passt.sock")),
        *("--tcp-ports", "127.0.0.1/40022:22", "--udp-ports", "none"),
    ]


def test_passt_argv_carries_every_forward(tmp_path: Path) -> None:
    forwards = (PortForward("127.0.0.1", 40022, 22), PortForward("127.0.0.1", 8053, 53, "udp"))
    forwards += (PortForward("127.0.0.1", 8080, 80),)
    argv = passt_argv("/usr/bin/passt", NicSpec(kind="user", mac=MAC, forwards=forwards), tmp_path / "s", 0, 0)
    assert argv[-6:] == [
        *("--tcp-ports", "127.0.0.1/40022:22", "--tcp-ports", "127.0.0.1/8080:80"),
        *("--udp-ports", "127.0.0.1/8053:53"),
    ]


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        (PortForward("::1", 2222, 22), "IPv4 only"),
        (PortForward("127.0.0.1", 0, 22), "invalid port"),
        (PortForward("localhost", 2222, 22), "does not appear"),
    ],
)
def test_bad_forwards_are_refused(tmp_path: Path, forward: PortForward, message: str) -> None:
    nic = NicSpec(kind="user", mac=MAC, forwards=(forward,))
    with pytest.raises(ValueError, match=message):
        passt_argv("/usr/bin/passt", nic, tmp_path / "passt.sock", 0, 0)


def test_only_isolated_user_nics_use_passt() -> None:
    assert uses_passt(NicSpec(kind="user", mac=MAC), "/usr/bin/passt")
    assert not uses_passt(NicSpec(kind="user", mac=MAC), None)  # not installed: slirp with restrict=on
    assert not uses_passt(NicSpec(kind="user", mac=MAC, host_access=True), "/usr/bin/passt")
    assert not uses_passt(NicSpec(kind="tap", mac=MAC, tap_name="tap0"), "/usr/bin/passt")
    # usernet_egress = false: no connection at all, which is QEMU's restrict=on, even with passt installed.
    assert not uses_passt(NicSpec(kind="user", mac=MAC, egress=False), "/usr/bin/passt")
    assert not uses_passt(None, "/usr/bin/passt")


def test_qemu_connects_to_passt_instead_of_restricted_slirp(make_spec, run_dir: Path) -> None:
    nic = NicSpec(kind="user", mac=MAC, forwards=(PortForward("127.0.0.1", 2222, 22),))
    opts = QemuOptions(
        binary="/usr/bin/qemu-system-x86_64",
        machine="microvm",
        accel="tcg",
        tsc_khz=None,
        vsock=False,
        qmp_socket=run_dir / "qmp.sock",
        passt_socket=run_dir / "pa,sst.sock",
    )
    argv = build_argv(make_spec(nic=nic), opts)
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev == f"stream,id=net0,server=off,addr.type=unix,addr.path={run_dir}/pa,,sst.sock"


def test_passt_starts_listens_on_loopback_and_is_reaped_on_stop(tmp_path: Path) -> None:
    binary = find_passt()
    assert binary is not None, "passt is a runtime package: scripts/setup installs it"
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    port = _free_port()
    nic = NicSpec(kind="user", mac=MAC, forwards=(PortForward("127.0.0.1", port, 22),))
    popen, start_time, socket_path = start_passt(binary, nic, run_dir)
    try:
        # The socket exists in the 0700 run directory although passt runs as the caller, not "nobody".
        assert socket_path == run_dir / "passt.sock" and socket_path.is_socket()
        assert (run_dir.stat().st_mode & 0o777) == 0o700
        assert read_proc_stat(popen.pid) is not None
        assert os.stat(f"/proc/{popen.pid}").st_uid == os.getuid()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the ssh forward listens on loopback
    finally:
        stop_passt(popen.pid, start_time, socket_path)
    assert not is_same_process(popen.pid, start_time)
    assert read_proc_stat(popen.pid) is None  # reaped: no zombie left behind
    assert not socket_path.exists()
    stop_passt(popen.pid, start_time, socket_path)  # idempotent


def test_passt_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    binary = find_passt()
    assert binary is not None
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        nic = NicSpec(kind="user", mac=MAC, forwards=(PortForward("127.0.0.1", port, 22),))
        with pytest.raises(PasstError, match="passt did not start"):
            start_passt(binary, nic, run_dir)
    finally:
        taken.close()
    assert not (run_dir / "passt.sock").exists()


ROUTES_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (ROUTES_HEADER + "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n", True),
        (ROUTES_HEADER + "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n", False),  # no default
        (ROUTES_HEADER + "eth0\t00000000\t0100A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n", False),  # not up
        (ROUTES_HEADER, False),  # an offline host or a namespace with no way out
    ],
)
def test_passt_is_used_only_where_it_has_a_default_route(tmp_path: Path, table: str, expected: bool) -> None:
    routes = tmp_path / "route"
    routes.write_text(table)
    assert has_default_route(routes) is expected
    # passt refuses to start without one, so the VM would fail to start: restrict=on instead.
    assert (find_passt(routes) is not None) is expected
    assert not has_default_route(tmp_path / "absent")
