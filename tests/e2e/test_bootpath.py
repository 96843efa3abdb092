"""Boot protocol v1 end to end: the real kernel + golden image booted under QEMU TCG.

Two VMs of the same image run at once (boots are expensive under emulation,
so one pair serves every check); a third, deliberately broken boot shows
that the initramfs fails loudly and powers off.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.testing.guest import host_pattern, known_hosts_line
from banger_debootstrap.build import sha256_file
from banger_hookspecs import ImageArtifact, KernelArtifact, boot

from .conftest import USERNET, TcgVm, launch_tcg_vm

pytestmark = pytest.mark.e2e

WORK_NOTE = "staged on the work disk by the host\n"


@pytest.fixture(scope="module")
def pair(
    qemu: str,
    banger_kernel: KernelArtifact,
    golden_image: ImageArtifact,
    test_ssh_key: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TcgVm, TcgVm]]:
    """Two running VMs of the golden image, both ssh-ready."""
    root = tmp_path_factory.mktemp("pair")
    vms: list[TcgVm] = []
    try:
        for name in ("alpha", "beta"):
            vms.append(
                launch_tcg_vm(
                    name,
                    banger_kernel,
                    golden_image.rootfs,
                    root / name,
                    test_ssh_key,
                    work_files={"note.txt": WORK_NOTE},
                )
            )
        for vm in vms:
            vm.wait_for_ssh()
            vm.wait_for_serial(boot.READY_MARKER)
        yield vms[0], vms[1]
    finally:
        for vm in vms:
            vm.stop()


def test_ready_marker_carries_the_boot_id(pair: tuple[TcgVm, TcgVm]) -> None:
    for vm in pair:
        match = re.search(rf"{boot.READY_MARKER} ([0-9a-f-]{{36}})", vm.serial())
        assert match, vm.serial()[-2000:]
        assert vm.ssh("cat", "/proc/sys/kernel/random/boot_id").stdout.strip() == match.group(1)


def test_ssh_key_login_with_pinned_host_key(pair: tuple[TcgVm, TcgVm]) -> None:
    alpha, beta = pair
    assert alpha.ssh("true").returncode == 0
    # beta's pinned key does not match alpha: strict checking refuses the connection
    result = subprocess.run(
        [*alpha.ssh_argv(known_hosts=_known_hosts_for(beta, alpha.port)), "true"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr or "verification failed" in result.stderr


def _known_hosts_for(vm: TcgVm, port: int) -> Path:
    path = vm.directory / f"known_hosts-as-{port}"
    path.write_text(known_hosts_line([host_pattern("127.0.0.1", port)], vm.identity))
    return path


def test_password_login_is_refused(pair: tuple[TcgVm, TcgVm]) -> None:
    alpha, _ = pair
    result = subprocess.run(
        [
            *alpha.ssh_argv(
                extra=[
                    "-o",
                    "PubkeyAuthentication=no",
                    "-o",
                    "PreferredAuthentications=password,keyboard-interactive",
                    "-o",
                    "NumberOfPasswordPrompts=1",
                ]
            ),
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 255
    # the server offers public keys only
    assert "Permission denied (publickey)" in result.stderr


def test_each_vm_has_its_own_identity(pair: tuple[TcgVm, TcgVm]) -> None:
    seen: dict[str, set[str]] = {"hostname": set(), "machine-id": set(), "host key": set()}
    script = (
        "hostname; cat /etc/machine-id; cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub;"
        " stat -c '%a %U' /etc/ssh/ssh_host_ed25519_key; ls /etc/ssh | grep '^ssh_host_'"
    )
    for vm in pair:  # one ssh round trip per VM: each costs ~1 s under emulation
        hostname, machine_id, host_key, key_mode, *host_key_files = vm.ssh("sh", "-c", script).stdout.splitlines()
        assert hostname == vm.name
        assert machine_id == vm.identity.machine_id
        assert host_key == vm.identity.host_key_public
        assert key_mode == "600 root"
        assert host_key_files == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
        seen["hostname"].add(hostname)
        seen["machine-id"].add(machine_id)
        seen["host key"].add(host_key)
    assert all(len(values) == 2 for values in seen.values()), seen


def test_overlay_root_is_writable_and_image_mounted_read_only(pair: tuple[TcgVm, TcgVm]) -> None:
    alpha, beta = pair
    assert alpha.ssh("findmnt", "-no", "FSTYPE", "/").stdout.strip() == "overlay"
    alpha.ssh("sh", "-c", "echo written-by-alpha > /usr/local/share/banger-test && sync")
    assert alpha.ssh("cat", "/usr/local/share/banger-test").stdout == "written-by-alpha\n"
    # the shared image did not change under beta
    assert beta.ssh("test", "-e", "/usr/local/share/banger-test", check=False).returncode == 1
    options = alpha.ssh("findmnt", "-no", "OPTIONS", "/run/banger/image").stdout
    assert "ro" in options.split(",")
    assert alpha.ssh("touch", "/run/banger/image/x", check=False).returncode != 0


def test_root_is_the_work_disk(pair: tuple[TcgVm, TcgVm]) -> None:
    alpha, _ = pair
    assert alpha.ssh("findmnt", "-no", "SOURCE", "/root").stdout.strip() == "/dev/vdc"
    assert alpha.ssh("cat", "/root/note.txt").stdout == WORK_NOTE
    # staged by this (possibly unprivileged) host user; root's in the guest, modes sshd accepts
    stats = alpha.ssh("stat", "-c", "%n %a %U", "/root", "/root/.ssh", "/root/.ssh/authorized_keys").stdout
    assert stats.split("\n")[:3] == ["/root 700 root", "/root/.ssh 700 root", "/root/.ssh/authorized_keys 600 root"]


def test_network_from_the_kernel_command_line(pair: tuple[TcgVm, TcgVm]) -> None:
    alpha, _ = pair
    addresses = alpha.ssh("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"{USERNET.address}/{USERNET.prefix}" in addresses
    assert f"default via {USERNET.gateway}" in alpha.ssh("ip", "route").stdout
    assert alpha.ssh("cat", "/etc/resolv.conf").stdout.strip() == f"nameserver {USERNET.dns}"


def test_systemd_is_healthy(pair: tuple[TcgVm, TcgVm]) -> None:
    for vm in pair:
        state = vm.ssh("systemctl", "is-system-running", "--wait", check=False, timeout=300).stdout.strip()
        failed = vm.ssh("systemctl", "--failed", "--no-legend", "--plain").stdout.strip()
        assert (state, failed) == ("running", ""), f"{vm.name}: {state}, failed units: {failed}"


def test_power_button_shuts_down_cleanly_and_image_is_unchanged(
    pair: tuple[TcgVm, TcgVm], golden_image: ImageArtifact
) -> None:
    alpha, beta = pair
    alpha.power_button()  # what the qemu backend's stop() does first
    assert alpha.wait_for_exit(timeout=120) == 0, "the guest must power off on the ACPI power button"
    # a clean shutdown unmounted the overlay disk: e2fsck finds nothing to fix
    fsck = subprocess.run(
        ["/usr/sbin/e2fsck", "-fn", str(alpha.directory / "overlay.ext4")], capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    beta.stop()  # killed: the image is attached read-only, so even this cannot touch it
    assert sha256_file(golden_image.rootfs) == golden_image.sha256


def test_image_contents_without_booting(golden_image: ImageArtifact) -> None:
    def debugfs(request: str) -> str:
        result = subprocess.run(
            ["/usr/sbin/debugfs", "-R", request, str(golden_image.rootfs)], capture_output=True, text=True, check=True
        )
        return result.stdout

    assert "ssh_host_" not in debugfs("ls -l /etc/ssh")
    assert debugfs("cat /etc/machine-id") == ""
    assert debugfs("cat /etc/fstab") == ""
    assert 'Fast link dest: "/dev/null"' in debugfs("stat /etc/systemd/system/getty-static.service")
    assert 'Fast link dest: "/dev/null"' in debugfs("stat /etc/systemd/system/e2scrub_reap.service")
    assert "banger-ready.service" in debugfs("ls /etc/systemd/system/multi-user.target.wants")
    generator = "stat /etc/systemd/system-generators/systemd-gpt-auto-generator"
    assert 'Fast link dest: "/dev/null"' in debugfs(generator)
    shadow_root = next(line for line in debugfs("cat /etc/shadow").splitlines() if line.startswith("root:"))
    assert shadow_root.split(":")[1].startswith(("!", "*"))


def test_initramfs_failure_is_loud_and_powers_off(
    qemu: str, banger_kernel: KernelArtifact, golden_image: ImageArtifact, test_ssh_key: Path, tmp_path: Path
) -> None:
    vm = launch_tcg_vm(
        "broken",
        banger_kernel,
        golden_image.rootfs,
        tmp_path / "broken",
        test_ssh_key,
        mangle_cmdline=lambda line: line.replace("banger.proto=1", "banger.proto=99"),
    )
    try:
        vm.wait_for_serial("banger-init:", timeout=180)
        deadline = time.monotonic() + 60
        while vm.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert vm.process.poll() is not None, "the VM must power off after a fatal initramfs error"
        assert "boot protocol '99'" in vm.serial()
    finally:
        vm.stop()
