"""The real Firecracker binary (v1.12.1 fixture) driven through the plugin's driver.

Every API call the driver makes must be accepted. On this lab's hosts KVM is
PVM, so the guest cannot boot: the instance starts, then dies, and the driver
must report that (is_running turns False, log_tail says why) without hanging.
On a host with hardware KVM the same test sees the guest's marker instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress
from banger_firecracker.api import FirecrackerApi
from banger_firecracker.driver import FirecrackerDriver, FirecrackerLaunchError
from banger_firecracker.payloads import UnsupportedSpec
from banger_hookspecs import NicSpec, PluginContext, VmProcess
from banger_hookspecs.process import is_same_process, wait_gone

pytestmark = pytest.mark.integration

#: Seconds a PVM host needs to kill a stock guest (measured: ~35 s); bounded wait.
GUEST_DEATH_TIMEOUT = 240.0


def driver_for(ctx: PluginContext, **config: object) -> FirecrackerDriver:
    return FirecrackerDriver(dataclasses.replace(ctx, config={**ctx.config, **config}))


def no_files_left(proc: VmProcess) -> None:
    assert not Path(proc.control_socket).exists()
    assert not Path(proc.extra["vsock_socket"]).exists()


def test_every_call_is_accepted_and_a_dead_guest_is_reported(
    plugin_context: PluginContext, firecracker_binaries, guest_spec, launched, serial_waiter, markers
) -> None:
    driver = driver_for(plugin_context, firecracker_bin=firecracker_binaries.firecracker)
    spec = guest_spec(vsock_cid=3)
    progress = RecordingProgress()
    proc = driver.launch(spec, progress)
    launched.append((driver, proc))
    assert progress.steps == ["starting Firecracker", "configuring Firecracker"]
    assert proc.control_socket == str(spec.run_dir / "fc.sock")
    assert os.getsid(proc.pid) == proc.pid  # own session: survives the daemon
    # What Firecracker answered, as the driver recorded it from the real responses.
    assert [line for line in progress.lines if line.startswith("PUT ")] == [
        "PUT /logger: 204",
        "PUT /machine-config: 204",
        "PUT /boot-source: 204",
        "PUT /drives/disk0_image: 204",
        "PUT /drives/disk1_overlay: 204",
        "PUT /drives/disk2_work: 204",
        "PUT /vsock: 204",
        "PUT /actions: 204",
    ]
    with FirecrackerApi(Path(proc.control_socket)) as api:
        config = api.get("/vm/config")
    assert [(d["drive_id"], d["path_on_host"], d["is_read_only"]) for d in config["drives"]] == [
        ("disk0_image", str(spec.disks[0].path), True),
        ("disk1_overlay", str(spec.disks[1].path), False),
        ("disk2_work", str(spec.disks[2].path), False),
    ]
    assert config["boot-source"]["boot_args"] == "console=ttyS0 panic=-1 banger.proto=1 reboot=k pci=off"
    assert config["vsock"]["uds_path"] == proc.extra["vsock_socket"]
    assert Path(proc.extra["vsock_socket"]).exists()
    assert driver.is_running(proc)
    assert not driver.is_running(dataclasses.replace(proc, start_time=proc.start_time + 1))

    if plugin_context.host.kvm == "hardware":
        serial_waiter(spec.serial_log, markers[0])
        return
    deadline = time.monotonic() + GUEST_DEATH_TIMEOUT
    while driver.is_running(proc) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not driver.is_running(proc), (
        f"guest still running after {GUEST_DEATH_TIMEOUT:.0f} s on {plugin_context.host.kvm} KVM"
    )
    tail = driver.log_tail(proc)
    assert tail.startswith(f"Firecracker log ({proc.extra['log']}):")
    assert "KVM_EXIT_INTERNAL_ERROR" in tail
    # The API stops answering while the VMM is still exiting: it finishes on its own (bounded wait).
    assert wait_gone(proc.pid, proc.start_time, 30)
    driver.kill(proc)  # nothing left to kill: removes the sockets
    no_files_left(proc)


def test_tap_nic_inside_a_network_namespace(
    plugin_context: PluginContext, firecracker_binaries, tap_netns, guest_spec, launched, run_dir: Path
) -> None:
    wrapper = tap_netns.wrapper(firecracker_binaries.firecracker, run_dir)
    driver = driver_for(plugin_context, firecracker_bin=wrapper)
    spec = guest_spec(nic=NicSpec(kind="tap", mac="52:54:00:12:34:58", tap_name=tap_netns.tap))
    progress = RecordingProgress()
    proc = driver.launch(spec, progress)
    launched.append((driver, proc))
    assert "PUT /network-interfaces/eth0: 204" in progress.lines
    assert progress.lines[-1] == "PUT /actions: 204"
    assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == os.stat(f"/run/netns/{tap_netns.name}").st_ino
    with FirecrackerApi(Path(proc.control_socket)) as api:
        (iface,) = api.get("/vm/config")["network-interfaces"]
    assert (iface["host_dev_name"], iface["guest_mac"]) == (tap_netns.tap, "52:54:00:12:34:58")
    assert driver.is_running(proc)
    driver.kill(proc)
    assert not is_same_process(proc.pid, proc.start_time)
    no_files_left(proc)


def test_stop_sends_ctrl_alt_del_then_kills(
    plugin_context: PluginContext, firecracker_binaries, guest_spec, launched, caplog: pytest.LogCaptureFixture
) -> None:
    driver = driver_for(plugin_context, firecracker_bin=firecracker_binaries.firecracker)
    proc = driver.launch(guest_spec(), RecordingProgress())
    launched.append((driver, proc))
    with caplog.at_level(logging.INFO, logger="banger"):
        driver.stop(proc, timeout=2)
    assert "SendCtrlAltDel failed" not in caplog.text  # Firecracker accepted it
    if plugin_context.host.kvm != "hardware":  # a guest that is not running cannot react to Ctrl+Alt+Del
        assert f"Firecracker pid {proc.pid}: guest did not shut down within 2 s" in caplog.text
    assert not is_same_process(proc.pid, proc.start_time)
    no_files_left(proc)


def test_a_bzimage_kernel_is_refused_with_firecrackers_fault_message(
    plugin_context: PluginContext, firecracker_binaries, guest_spec, guest_kernel, run_dir: Path
) -> None:
    driver = driver_for(plugin_context, firecracker_bin=firecracker_binaries.firecracker)
    with pytest.raises(FirecrackerLaunchError) as failure:
        driver.launch(guest_spec(kernel=guest_kernel.vmlinuz), RecordingProgress())
    first_line, *rest = str(failure.value).splitlines()
    assert first_line.startswith("VM testvm failed to start: Firecracker refused PUT /actions: ")
    assert "Invalid Elf magic number" in first_line
    assert rest[0] == f"Firecracker log ({run_dir}/firecracker.log):"
    assert not (run_dir / "fc.sock").exists()
    assert not any(p.name == "firecracker" for p in Path("/proc").glob("[0-9]*/exe") if _exe_in(p, run_dir))


def _exe_in(exe_link: Path, run_dir: Path) -> bool:
    """True if the process behind ``exe_link`` was started with ``run_dir`` on its command line."""
    try:
        return str(run_dir) in (exe_link.parent / "cmdline").read_text()
    except OSError:
        return False


def test_a_missing_disk_is_refused_with_firecrackers_fault_message(
    plugin_context: PluginContext, firecracker_binaries, guest_spec, run_dir: Path
) -> None:
    spec = guest_spec()
    spec.disks[1].path.unlink()
    driver = driver_for(plugin_context, firecracker_bin=firecracker_binaries.firecracker)
    with pytest.raises(
        FirecrackerLaunchError, match=r"^VM testvm failed to start: Firecracker refused PUT /drives/disk1_overlay: "
    ):
        driver.launch(spec, RecordingProgress())
    assert not (run_dir / "fc.sock").exists()


def test_user_networking_is_refused_before_anything_starts(
    plugin_context: PluginContext, firecracker_binaries, guest_spec, run_dir: Path
) -> None:
    driver = driver_for(plugin_context, firecracker_bin=firecracker_binaries.firecracker)
    with pytest.raises(UnsupportedSpec, match="--network bridge"):
        driver.launch(guest_spec(nic=NicSpec(kind="user", mac="52:54:00:12:34:56")), RecordingProgress())
    assert sorted(p.name for p in run_dir.iterdir()) == ["image.img", "overlay.img", "work.img"]


def test_jailer_layout(
    plugin_context: PluginContext, firecracker_binaries, guest_spec, launched, run_dir: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the jailer needs root")
    driver = driver_for(
        plugin_context,
        firecracker_bin=firecracker_binaries.firecracker,
        jailer_bin=firecracker_binaries.jailer,
        use_jailer=True,
        jailer_uid=65534,
        jailer_gid=65534,
    )
    spec = guest_spec(vsock_cid=5)
    proc = driver.launch(spec, RecordingProgress())
    launched.append((driver, proc))
    jail = run_dir / "jail" / "firecracker" / spec.vm_id
    root = jail / "root"
    assert proc.extra["jail_dir"] == str(jail)
    assert proc.control_socket == str(root / "run" / "firecracker.socket")
    assert driver.is_running(proc)
    # Firecracker itself runs as the jail uid, chrooted.
    status = Path(f"/proc/{proc.pid}/status").read_text()
    assert "\nUid:\t65534\t65534\t65534\t65534\n" in status
    # Its root directory is the jail (the jailer pivots into it, so compare inodes, not paths).
    assert Path(f"/proc/{proc.pid}/root/vmlinux").stat().st_ino == (root / "vmlinux").stat().st_ino

    def owner(path: Path) -> tuple[int, int, str]:
        info = path.lstat()
        return info.st_uid, info.st_gid, oct(info.st_mode & 0o777)

    assert owner(root) == (65534, 65534, "0o700")
    assert owner(root / "firecracker.log")[:2] == (65534, 65534)
    assert owner(root / "disk1-overlay.img")[:2] == (65534, 65534)
    assert owner(root / "disk2-work.img")[:2] == (65534, 65534)
    assert owner(root / "disk0-image.img")[:2] == (0, 0)  # read-only image: linked, never chowned
    # Hard links, not copies: the shared image is one inode.
    for index, disk in enumerate(spec.disks):
        assert (root / f"disk{index}-{disk.role}.img").stat().st_ino == disk.path.stat().st_ino
    assert (root / "vmlinux").stat().st_size == spec.kernel.stat().st_size
    assert (root / "dev" / "kvm").is_char_device()
    assert (root / "run" / "firecracker.socket").is_socket()
    assert (root / "vsock.sock").is_socket()
    with FirecrackerApi(Path(proc.control_socket)) as api:
        config = api.get("/vm/config")
    assert config["boot-source"]["kernel_image_path"] == "/vmlinux"
    assert [d["path_on_host"] for d in config["drives"]] == [
        "/disk0-image.img",
        "/disk1-overlay.img",
        "/disk2-work.img",
    ]
    assert json.dumps(config["vsock"]) == json.dumps({"guest_cid": 5, "uds_path": "/vsock.sock"})

    driver.kill(proc)
    assert not is_same_process(proc.pid, proc.start_time)
    assert not jail.exists()
    assert all(d.path.exists() for d in spec.disks)  # the originals stay


def test_the_agent_transport_speaks_connect_to_the_real_vsock_muxer(
    plugin_context: PluginContext, firecracker_binaries, guest_spec, launched
) -> None:
    """banger's host half of the agent channel against Firecracker's own vsock UDS (no guest boots here)."""
    from banger_core.common.agent_transport import VsockUdsTransport
    from banger_core.common.errors import AgentUnavailable
    from banger_hookspecs.guest_agent import VSOCK_PORT

    if plugin_context.host.kvm == "hardware":
        pytest.skip("a real guest would answer here; the e2e agent tests cover that case")
    driver = driver_for(plugin_context, firecracker_bin=firecracker_binaries.firecracker)
    proc = driver.launch(guest_spec(vsock_cid=7), RecordingProgress())
    launched.append((driver, proc))
    transport = VsockUdsTransport(Path(proc.extra["vsock_socket"]), VSOCK_PORT)
    # Firecracker accepts the Unix connection and reads CONNECT; with no guest agent it never says OK.
    with pytest.raises(AgentUnavailable, match=f"vsock {proc.extra['vsock_socket']}"):
        transport.connect(timeout=5)
