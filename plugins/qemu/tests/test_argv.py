"""Unit tests: the QEMU command line built from a VM spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from banger_hookspecs import Disk, NicSpec, PortForward
from banger_qemu.argv import QemuOptions, build_argv, kernel_cmdline

pytestmark = pytest.mark.unit


def opts(tmp_path: Path, **overrides: object) -> QemuOptions:
    values: dict[str, object] = {
        "binary": "/usr/bin/qemu-system-x86_64",
        "machine": "microvm",
        "accel": "tcg",
        "tsc_khz": 2596150,
        "vsock": False,
        "qmp_socket": tmp_path / "qmp.sock",
    }
    values.update(overrides)
    return QemuOptions(**values)  # type: ignore[arg-type]


def pairs(argv: list[str], flag: str) -> list[str]:
    """Every value following ``flag`` in ``argv``."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_microvm_tcg_argv_is_exact(make_spec, run_dir: Path) -> None:
    spec = make_spec(kernel=Path("/k/vmlinux"), initrd=Path("/k/initrd"))
    argv = build_argv(spec, opts(run_dir))
    assert argv == [
        "/usr/bin/qemu-system-x86_64",
        *("-name", "testvm", "-M", "microvm", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "256M"),
        *("-nographic", "-nodefaults", "-no-user-config", "-no-reboot"),
        *("-kernel", "/k/vmlinux", "-initrd", "/k/initrd"),
        "-append",
        "console=ttyS0 panic=-1 banger.proto=1 reboot=t tsc_early_khz=2596150",
        *("-chardev", f"file,id=serial0,path={run_dir}/serial.log", "-serial", "chardev:serial0"),
        *("-chardev", f"socket,id=qmp,path={run_dir}/qmp.sock,server=on,wait=off", "-mon", "chardev=qmp,mode=control"),
        "-drive",
        f"if=none,id=disk0,format=raw,file.driver=file,file.filename={run_dir}/image.img,readonly=on",
        *("-device", "virtio-blk-device,drive=disk0"),
        "-drive",
        f"if=none,id=disk1,format=raw,file.driver=file,file.filename={run_dir}/overlay.img,"
        "discard=unmap,detect-zeroes=unmap",
        *("-device", "virtio-blk-device,drive=disk1"),
        "-drive",
        f"if=none,id=disk2,format=raw,file.driver=file,file.filename={run_dir}/work.img,"
        "discard=unmap,detect-zeroes=unmap",
        *("-device", "virtio-blk-device,drive=disk2"),
        *("-device", "virtio-serial-device,id=agentbus"),
        *("-chardev", f"socket,id=agent,path={run_dir}/agent.sock,server=on,wait=off"),
        *("-device", "virtserialport,bus=agentbus.0,chardev=agent,name=org.banger.agent.0"),
    ]


def test_only_the_image_is_read_only_and_disks_keep_spec_order(make_spec, run_dir: Path) -> None:
    drives = pairs(build_argv(make_spec(), opts(run_dir)), "-drive")
    assert [d.split("file.filename=")[1].split(",")[0] for d in drives] == [
        f"{run_dir}/image.img",
        f"{run_dir}/overlay.img",
        f"{run_dir}/work.img",
    ]
    assert ["readonly=on" in d for d in drives] == [True, False, False]


def test_q35_uses_pci_devices_and_no_microvm_cmdline_extras(make_spec, run_dir: Path) -> None:
    spec = make_spec(nic=NicSpec(kind="tap", mac="52:54:00:00:00:01", tap_name="bgr0"))
    argv = build_argv(spec, opts(run_dir, machine="q35"))
    assert pairs(argv, "-M") == ["q35"]
    assert set(pairs(argv, "-device")) == {
        "virtio-blk-pci,drive=disk0",
        "virtio-blk-pci,drive=disk1",
        "virtio-blk-pci,drive=disk2",
        "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01",
        "virtio-serial-pci,id=agentbus",
        "virtserialport,bus=agentbus.0,chardev=agent,name=org.banger.agent.0",
    }
    assert pairs(argv, "-append") == ["console=ttyS0 panic=-1 banger.proto=1"]


def test_kvm_uses_host_cpu_and_no_tsc_hint(make_spec, run_dir: Path) -> None:
    argv = build_argv(make_spec(), opts(run_dir, accel="kvm"))
    assert pairs(argv, "-accel") == ["kvm"]
    assert pairs(argv, "-cpu") == ["host"]
    assert pairs(argv, "-append") == ["console=ttyS0 panic=-1 banger.proto=1 reboot=t"]


def test_tsc_hint_needs_a_known_frequency(make_spec, run_dir: Path) -> None:
    assert "tsc_early_khz" not in kernel_cmdline(make_spec(), opts(run_dir, tsc_khz=None))


def test_cmdline_keys_from_the_core_win(make_spec, run_dir: Path) -> None:
    spec = make_spec(cmdline="console=hvc0 reboot=k tsc_early_khz=1000 banger.ip=10.0.0.2/24")
    assert kernel_cmdline(spec, opts(run_dir)) == "console=hvc0 reboot=k tsc_early_khz=1000 banger.ip=10.0.0.2/24"


def test_tap_nic(make_spec, run_dir: Path) -> None:
    spec = make_spec(nic=NicSpec(kind="tap", mac="52:54:00:aa:bb:cc", tap_name="bgr1a2b3c"))
    argv = build_argv(spec, opts(run_dir))
    assert pairs(argv, "-netdev") == ["tap,id=net0,ifname=bgr1a2b3c,script=no,downscript=no"]
    assert "virtio-net-device,netdev=net0,mac=52:54:00:aa:bb:cc" in pairs(argv, "-device")


def test_user_nic_with_forwards(make_spec, run_dir: Path) -> None:
    forwards = (PortForward("127.0.0.1", 2222, 22), PortForward("127.0.0.1", 8080, 80))
    spec = make_spec(nic=NicSpec(kind="user", mac="52:54:00:aa:bb:cc", forwards=forwards))
    argv = build_argv(spec, opts(run_dir))
    # Isolated unless asked otherwise: slirp would hand the guest the host's 127.0.0.1 as 10.0.2.2.
    assert pairs(argv, "-netdev") == [
        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80"
    ]


def test_udp_forwards_need_an_unrestricted_user_nic(make_spec, run_dir: Path) -> None:
    """restrict=on drops every UDP datagram the guest sends (replies too): refused rather than a silent black hole."""
    udp = PortForward("127.0.0.1", 8053, 53, "udp")
    isolated = NicSpec(kind="user", mac="52:54:00:aa:bb:cc", forwards=(udp,))
    with pytest.raises(ValueError, match=r"^UDP port 8053 cannot reach an isolated usernet guest here: "):
        build_argv(make_spec(nic=isolated), opts(run_dir))
    opened = dataclasses.replace(isolated, host_access=True)
    assert pairs(build_argv(make_spec(nic=opened), opts(run_dir)), "-netdev") == [
        "user,id=net0,hostfwd=udp:127.0.0.1:8053-:53"
    ]


def test_user_nic_with_host_access_is_not_restricted(make_spec, run_dir: Path) -> None:
    forward = PortForward("127.0.0.1", 2222, 22)
    nic = NicSpec(kind="user", mac="52:54:00:aa:bb:cc", forwards=(forward,), host_access=True)
    argv = build_argv(make_spec(nic=nic), opts(run_dir))
    assert pairs(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"]


@pytest.mark.parametrize(
    ("nic", "message"),
    [
        (NicSpec(kind="tap", mac="52:54:00:aa:bb:cc", tap_name="bad,name"), "invalid tap name"),
        (NicSpec(kind="tap", mac="52:54:00:aa:bb:cc", tap_name=None), "invalid tap name"),
        (NicSpec(kind="tap", mac="52:54:00:aa:bb:cc", tap_name="x" * 16), "invalid tap name"),
        (NicSpec(kind="tap", mac="52:54:00:aa:bb:cc,x=y", tap_name="bgr0"), "invalid MAC"),
        (NicSpec(kind="user", mac="52:54:00:aa:bb:cc", forwards=(PortForward("localhost", 1, 22),)), "does not"),
        (NicSpec(kind="user", mac="52:54:00:aa:bb:cc", forwards=(PortForward("::1", 2222, 22),)), "IPv4 only"),
        (NicSpec(kind="user", mac="52:54:00:aa:bb:cc", forwards=(PortForward("127.0.0.1", 0, 22),)), "invalid port"),
    ],
)
def test_bad_nics_are_refused(make_spec, run_dir: Path, nic: NicSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_argv(make_spec(nic=nic), opts(run_dir))


def test_commas_in_paths_are_escaped_and_files_are_never_protocols(make_spec, run_dir: Path) -> None:
    # A path trying to smuggle an option, and one that looks like QEMU's json: pseudo-protocol.
    image = Disk(path=Path("json:{x}/a,readonly=off"), read_only=True, role="image")
    argv = build_argv(make_spec(disks=(image,), serial_log=Path("/x/se,rial.log")), opts(run_dir))
    assert pairs(argv, "-drive") == [
        "if=none,id=disk0,format=raw,file.driver=file,file.filename=json:{x}/a,,readonly=off,readonly=on"
    ]
    assert pairs(argv, "-chardev")[0] == "file,id=serial0,path=/x/se,,rial.log"


@pytest.mark.parametrize("field", ["kernel", "serial_log"])
def test_control_characters_in_paths_are_refused(make_spec, run_dir: Path, field: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        build_argv(make_spec(**{field: run_dir / "bad\nname"}), opts(run_dir))


def test_bad_names_and_sizes_are_refused(make_spec, run_dir: Path) -> None:
    with pytest.raises(ValueError, match="invalid VM name"):
        build_argv(make_spec(name="Bad_Name"), opts(run_dir))
    with pytest.raises(ValueError, match="invalid VM size"):
        build_argv(make_spec(memory_mib=16), opts(run_dir))


def test_vsock_only_with_vhost_vsock(make_spec, run_dir: Path) -> None:
    spec = make_spec(vsock_cid=7)
    assert not any("vsock" in d for d in pairs(build_argv(spec, opts(run_dir, vsock=False)), "-device"))
    assert "vhost-vsock-device,guest-cid=7" in pairs(build_argv(spec, opts(run_dir, vsock=True)), "-device")
    assert "vhost-vsock-pci,guest-cid=7" in pairs(build_argv(spec, opts(run_dir, vsock=True, machine="q35")), "-device")
