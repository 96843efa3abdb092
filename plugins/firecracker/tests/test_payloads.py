"""Unit tests: the API calls that configure a VM, and what Firecracker refuses up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger_firecracker.payloads import GuestFiles, UnsupportedSpec, boot_args, check_spec, configuration_calls
from banger_hookspecs import NicSpec, PortForward

pytestmark = pytest.mark.unit

FILES = GuestFiles(
    kernel="/k/vmlinux",
    initrd="/k/initrd",
    disks=("/d/image.img", "/d/overlay.img", "/d/work.img"),
    log="/r/firecracker.log",
    vsock_uds="/r/vsock.sock",
)


def test_calls_for_a_full_spec_are_exact(make_spec) -> None:
    spec = make_spec(nic=NicSpec(kind="tap", mac="52:54:00:aa:bb:cc", tap_name="bgr1"), vsock_cid=42, vcpus=3)
    assert configuration_calls(spec, FILES) == [
        (
            "/logger",
            {"log_path": "/r/firecracker.log", "level": "Warning", "show_level": True, "show_log_origin": False},
        ),
        ("/machine-config", {"vcpu_count": 3, "mem_size_mib": 256, "smt": False}),
        (
            "/boot-source",
            {
                "kernel_image_path": "/k/vmlinux",
                "initrd_path": "/k/initrd",
                "boot_args": "console=ttyS0 panic=-1 banger.proto=1 reboot=k pci=off",
            },
        ),
        (
            "/drives/disk0_image",
            {"drive_id": "disk0_image", "path_on_host": "/d/image.img", "is_root_device": False, "is_read_only": True},
        ),
        (
            "/drives/disk1_overlay",
            {
                "drive_id": "disk1_overlay",
                "path_on_host": "/d/overlay.img",
                "is_root_device": False,
                "is_read_only": False,
            },
        ),
        (
            "/drives/disk2_work",
            {"drive_id": "disk2_work", "path_on_host": "/d/work.img", "is_root_device": False, "is_read_only": False},
        ),
        ("/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "bgr1", "guest_mac": "52:54:00:aa:bb:cc"}),
        ("/vsock", {"guest_cid": 42, "uds_path": "/r/vsock.sock"}),
    ]


def test_no_nic_and_no_vsock_means_no_such_calls(make_spec) -> None:
    paths = [path for path, _ in configuration_calls(make_spec(), FILES)]
    assert paths == [
        "/logger",
        "/machine-config",
        "/boot-source",
        "/drives/disk0_image",
        "/drives/disk1_overlay",
        "/drives/disk2_work",
    ]


def test_boot_args_keep_the_cores_keys() -> None:
    assert boot_args("console=ttyS1 reboot=t banger.ip=10.0.0.2/24") == (
        "console=ttyS1 reboot=t banger.ip=10.0.0.2/24 panic=1 pci=off"
    )


def test_user_networking_is_refused_with_the_fix(make_spec) -> None:
    nic = NicSpec(kind="user", mac="52:54:00:aa:bb:cc", forwards=(PortForward("127.0.0.1", 2222, 22),))
    with pytest.raises(UnsupportedSpec, match=r"^Firecracker has no user-mode networking: use `--network bridge`"):
        check_spec(make_spec(nic=nic))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vm_id": "../../etc"}, "invalid VM id"),
        ({"vm_id": "x" * 65}, "invalid VM id"),
        ({"nic": NicSpec(kind="tap", mac="52:54:00:aa:bb:cc", tap_name=None)}, "invalid tap name"),
        ({"nic": NicSpec(kind="tap", mac="52:54:00:aa:bb:cc", tap_name="a/b")}, "invalid tap name"),
        ({"nic": NicSpec(kind="tap", mac="nope", tap_name="bgr0")}, "invalid MAC"),
    ],
)
def test_bad_specs_are_refused(make_spec, overrides: dict[str, object], message: str, run_dir: Path) -> None:
    with pytest.raises(UnsupportedSpec, match=message):
        configuration_calls(make_spec(**overrides), FILES)
