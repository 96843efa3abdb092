"""Real QEMU through the driver: a real Debian kernel and a busybox test initramfs under TCG.

Marked e2e (real guests boot). The tap test also needs root and a network
namespace (integration). Every test kills what it launched, also on failure.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress
from banger_hookspecs import NicSpec, PluginContext, PortForward, VmProcess, VmSpec
from banger_hookspecs.process import is_same_process
from banger_qemu.driver import QemuDriver, QemuLaunchError
from banger_qemu.probe import SANDBOX
from banger_qemu.qmp import QmpClient

pytestmark = pytest.mark.e2e


@pytest.fixture
def driver(plugin_context: PluginContext) -> Iterator[QemuDriver]:
    """A qemu driver on this host's real facts; kills every VM it launched at teardown."""
    qemu = QemuDriver(plugin_context)
    launched: list[VmProcess] = []
    real_launch = qemu.launch

    def tracking_launch(spec: VmSpec, progress: object) -> VmProcess:
        proc = real_launch(spec, progress)  # type: ignore[arg-type]
        launched.append(proc)
        return proc

    qemu.launch = tracking_launch  # type: ignore[method-assign]
    yield qemu
    for proc in launched:
        qemu.kill(proc)
        assert not is_same_process(proc.pid, proc.start_time)


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp{,6}) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


def _seccomp_mode(pid: int) -> int:
    """``Seccomp:`` of /proc/PID/status: 2 = a filter is installed."""
    (line,) = (row for row in Path(f"/proc/{pid}/status").read_text().splitlines() if row.startswith("Seccomp:"))
    return int(line.split()[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_guest_runs_and_powers_off_on_the_acpi_power_button(
    driver: QemuDriver, guest_spec, serial_waiter, markers, caplog: pytest.LogCaptureFixture
) -> None:
    guest_up, power_button = markers
    spec = guest_spec()
    progress = RecordingProgress()
    proc = driver.launch(spec, progress)
    assert progress.steps == ["starting QEMU (microvm, TCG)"]
    assert progress.lines[-1].startswith("/usr/bin/qemu-system-x86_64 -name testvm -M microvm -accel tcg")
    assert proc.backend == "qemu" and proc.control_socket == str(spec.run_dir / "qmp.sock")
    # The argv QEMU really runs with (from /proc), not just what we meant to pass.
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    argv = [arg.decode() for arg in cmdline]
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert argv[argv.index("-append") + 1].endswith(f"reboot=t tsc_early_khz={driver.ctx.host.tsc_khz}")
    # Own session: the VM survives the daemon's process group and terminal.
    assert os.getsid(proc.pid) == proc.pid
    # QEMU's seccomp filter at its strictest is on, and the serial pump and QMP below still work under it.
    assert argv[argv.index("-sandbox") + 1] == SANDBOX
    assert _seccomp_mode(proc.pid) == 2

    serial_waiter(spec.serial_log, guest_up)
    assert driver.is_running(proc)
    # The image is attached read-only, the VM's own disks writable, in spec order.
    with QmpClient(Path(proc.control_socket)) as qmp:
        blocks = qmp.execute("query-block")
    assert [(b["inserted"]["file"], b["inserted"]["ro"]) for b in blocks] == [
        (str(spec.disks[0].path), True),
        (str(spec.disks[1].path), False),
        (str(spec.disks[2].path), False),
    ]
    # A pid that now belongs to another process start is not this VM.
    assert not driver.is_running(dataclasses.replace(proc, start_time=proc.start_time + 1))

    with caplog.at_level(logging.INFO, logger="banger"):
        driver.stop(proc, timeout=60)
    assert power_button in spec.serial_log.read_text(errors="replace")
    assert f"QEMU pid {proc.pid}: guest powered off" in caplog.text
    assert not is_same_process(proc.pid, proc.start_time)
    assert not driver.is_running(proc)
    assert not Path(proc.control_socket).exists()
    assert "reboot: Power down" in spec.serial_log.read_text(errors="replace")


def test_the_console_goes_through_the_capping_pump_not_into_the_file(
    driver: QemuDriver, guest_spec, serial_waiter, markers
) -> None:
    """A `-chardev file` grows without limit; QEMU must write into the log pump's pipe instead."""
    spec = guest_spec()
    proc = driver.launch(spec, RecordingProgress())
    try:
        serial_waiter(spec.serial_log, markers[0])
        fds = [os.readlink(fd) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()]
        assert str(spec.serial_log) not in fds
        assert any(target.startswith("pipe:") for target in fds)
    finally:
        driver.kill(proc)


def test_stop_falls_back_to_sigterm_when_the_guest_ignores_the_power_button(
    driver: QemuDriver, guest_spec, serial_waiter, markers, caplog: pytest.LogCaptureFixture
) -> None:
    spec = guest_spec(cmdline="console=ttyS0 panic=-1 banger_test.ignore_acpi")
    proc = driver.launch(spec, RecordingProgress())
    serial_waiter(spec.serial_log, markers[0])
    with caplog.at_level(logging.INFO, logger="banger"):
        driver.stop(proc, timeout=3)
    assert "did not power off within 3 s; terminating QEMU" in caplog.text
    assert not is_same_process(proc.pid, proc.start_time)
    assert not Path(proc.control_socket).exists()
    assert markers[1] not in spec.serial_log.read_text(errors="replace")


def test_kill_cleans_up(driver: QemuDriver, guest_spec) -> None:
    proc = driver.launch(guest_spec(), RecordingProgress())
    assert driver.is_running(proc)
    driver.kill(proc)
    assert not is_same_process(proc.pid, proc.start_time)
    assert not Path(proc.control_socket).exists()
    assert not driver.is_running(proc)
    driver.kill(proc)  # idempotent: nothing left to kill, nothing raised


def test_guest_powering_itself_off_is_detected(driver: QemuDriver, guest_spec, serial_waiter, markers) -> None:
    spec = guest_spec(cmdline="console=ttyS0 panic=-1 banger_test.poweroff")
    proc = driver.launch(spec, RecordingProgress())
    serial_waiter(spec.serial_log, markers[0])
    for _ in range(300):  # bounded: QEMU exits right after the guest's poweroff
        if not driver.is_running(proc):
            break
        time.sleep(0.1)
    assert not driver.is_running(proc)
    assert "reboot: Power down" in driver.log_tail(proc)


def test_bad_kernel_path_raises_with_the_log_tail(driver: QemuDriver, guest_spec, run_dir: Path) -> None:
    spec = guest_spec(kernel=run_dir / "missing-vmlinux")
    with pytest.raises(QemuLaunchError) as failure:
        driver.launch(spec, RecordingProgress())
    message = str(failure.value)
    assert message.startswith("VM testvm failed to start: QEMU exited with status 1\nQEMU log (")
    assert f"qemu: could not open kernel file '{run_dir}/missing-vmlinux': No such file or directory" in message
    assert not (run_dir / "qmp.sock").exists()


def test_refused_option_raises_with_the_log_tail(driver: QemuDriver, guest_spec) -> None:
    with pytest.raises(QemuLaunchError, match=r"(?s)QEMU exited with status 1.*Invalid SMP CPUs 1000"):
        driver.launch(guest_spec(vcpus=1000), RecordingProgress())


def test_user_networking_forward_listens_on_loopback_only(driver: QemuDriver, guest_spec) -> None:
    port = _free_port()
    nic = NicSpec(kind="user", mac="52:54:00:12:34:56", forwards=(PortForward("127.0.0.1", port, 22),))
    proc = driver.launch(guest_spec(nic=nic), RecordingProgress())
    assert driver.is_running(proc)
    assert _listeners(port) == ["0100007F"]  # 127.0.0.1, nothing on 0.0.0.0 or ::
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # slirp accepts at once (before the guest has sshd): only the listener is checked here


@pytest.mark.integration
def test_tap_nic_inside_a_network_namespace(
    plugin_context: PluginContext, tap_netns, guest_spec, serial_waiter, markers, run_dir: Path
) -> None:
    wrapper = tap_netns.wrapper("qemu-system-x86_64", run_dir)
    qemu = QemuDriver(dataclasses.replace(plugin_context, config={**plugin_context.config, "qemu_bin": wrapper}))
    spec = guest_spec(nic=NicSpec(kind="tap", mac="52:54:00:12:34:57", tap_name=tap_netns.tap))
    proc = qemu.launch(spec, RecordingProgress())
    try:
        serial_waiter(spec.serial_log, markers[0])
        assert qemu.is_running(proc)
        # The driver saw QEMU's own pid (ip netns exec execs in place) and QEMU holds the tap.
        assert Path(f"/proc/{proc.pid}/exe").resolve() == Path("/usr/bin/qemu-system-x86_64")
        ns_inode = os.stat(f"/run/netns/{tap_netns.name}").st_ino
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == ns_inode
        link = subprocess.run(
            ["ip", "netns", "exec", tap_netns.name, "ip", "-o", "link", "show", tap_netns.tap],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "NO-CARRIER" not in link  # a tap reports carrier only while a process holds it open
    finally:
        qemu.kill(proc)
    assert not is_same_process(proc.pid, proc.start_time)


def test_q35_fallback_boots_and_powers_off(plugin_context: PluginContext, guest_spec, serial_waiter, markers) -> None:
    qemu = QemuDriver(dataclasses.replace(plugin_context, config={**plugin_context.config, "qemu_machine": "q35"}))
    spec = guest_spec()
    proc = qemu.launch(spec, RecordingProgress())
    try:
        serial_waiter(spec.serial_log, markers[0])
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode().split("\0")
        assert argv[argv.index("-M") + 1] == "q35"
        assert "tsc_early_khz" not in argv[argv.index("-append") + 1]
        with QmpClient(Path(proc.control_socket)) as qmp:
            assert [b["inserted"]["ro"] for b in qmp.execute("query-block")] == [True, False, False]
        qemu.stop(proc, timeout=60)
        assert markers[1] in spec.serial_log.read_text(errors="replace")
    finally:
        qemu.kill(proc)
    assert not is_same_process(proc.pid, proc.start_time)


def test_isolated_user_nic_runs_on_passt_which_goes_with_the_vm(
    driver: QemuDriver, plugin_context: PluginContext, guest_spec, run_dir: Path
) -> None:
    port = _free_port()
    nic = NicSpec(kind="user", mac="52:54:00:12:34:58", forwards=(PortForward("127.0.0.1", port, 22),))
    proc = driver.launch(guest_spec(nic=nic), RecordingProgress())
    passt_pid, passt_start = int(proc.extra["passt_pid"]), int(proc.extra["passt_start_time"])
    assert is_same_process(passt_pid, passt_start)
    assert Path(f"/proc/{passt_pid}/cmdline").read_bytes().split(b"\0")[0] == b"/usr/bin/passt"
    assert f"addr.path={run_dir}/passt.sock" in Path(f"/proc/{proc.pid}/cmdline").read_text()
    assert _seccomp_mode(proc.pid) == 2  # the sandboxed QEMU connects to passt's socket
    assert _listeners(port) == ["0100007F"]  # passt holds the ssh forward, on 127.0.0.1 only
    # A driver that did not start it (the daemon restarted) still ends and reaps passt with the VM.
    QemuDriver(plugin_context).kill(proc)
    assert not is_same_process(proc.pid, proc.start_time)
    assert not Path(f"/proc/{passt_pid}").exists()  # gone and reaped: no zombie
    assert not (run_dir / "passt.sock").exists()


def test_host_access_user_nic_stays_on_qemu_slirp(driver: QemuDriver, guest_spec) -> None:
    nic = NicSpec(kind="user", mac="52:54:00:12:34:59", host_access=True)
    proc = driver.launch(guest_spec(nic=nic), RecordingProgress())
    assert "passt_pid" not in proc.extra
    assert "user,id=net0" in Path(f"/proc/{proc.pid}/cmdline").read_text()
