"""Host side of boot protocol v1: identities, overlay and work disks, command line, known_hosts."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from banger_core.daemon import guest
from banger_core.daemon.guest import GuestSetupError
from banger_core.testing.guest import host_pattern, known_hosts_line
from banger_hookspecs import GuestNetConfig, boot

pytestmark = pytest.mark.unit

NET = GuestNetConfig(address="10.0.2.15", prefix=24, gateway="10.0.2.2", dns="10.0.2.3")


def debugfs(image: Path, request: str) -> str:
    """Run one debugfs request against an ext4 image (read-only)."""
    result = subprocess.run(["/usr/sbin/debugfs", "-R", request, str(image)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def inode_mode(image: Path, path: str) -> int:
    """Permission bits of ``path`` in the image (debugfs prints no type bits)."""
    match = re.search(r"Mode:\s+(\d+)", debugfs(image, f"stat {path}"))
    assert match, f"{path} not in {image}"
    return int(match.group(1), 8)


@pytest.fixture(scope="module")
def identity() -> guest.GuestIdentity:
    return guest.new_identity("web-1")


def test_identity_is_fresh_and_consistent(identity: guest.GuestIdentity, tmp_path: Path) -> None:
    other = guest.new_identity("web-1")
    assert re.fullmatch(r"[0-9a-f]{32}", identity.machine_id)
    assert identity.machine_id != other.machine_id
    assert identity.host_key_public != other.host_key_public
    assert identity.host_key_public.startswith("ssh-ed25519 ") and len(identity.host_key_public.split()) == 2
    # the private key really belongs to the public key (ssh-keygen -y derives it)
    key = tmp_path / "key"
    key.write_bytes(identity.host_key_private)
    key.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == identity.host_key_public.split()
    assert "PRIVATE" not in repr(identity)


@pytest.mark.parametrize("name", ["", "-web", "web-", "Web", "web_1", "a" * 64, "web.vm", "web 1"])
def test_bad_hostnames_are_refused(name: str) -> None:
    with pytest.raises(GuestSetupError, match="invalid VM name"):
        guest.new_identity(name)


def test_overlay_disk_holds_the_identity(identity: guest.GuestIdentity, tmp_path: Path) -> None:
    disk = tmp_path / "overlay.ext4"
    guest.create_overlay_disk(disk, 4 << 30, identity)
    info = disk.stat()
    assert info.st_size == 4 << 30
    assert info.st_blocks * 512 < 16 << 20, "the overlay disk must stay sparse"
    upper = boot.OVERLAY_UPPER
    assert debugfs(disk, f"cat {upper}/etc/hostname") == "web-1\n"
    assert debugfs(disk, f"cat {upper}/etc/machine-id") == identity.machine_id + "\n"
    assert debugfs(disk, f"cat {upper}/etc/ssh/ssh_host_ed25519_key").encode() == identity.host_key_private
    assert debugfs(disk, f"cat {upper}/etc/ssh/ssh_host_ed25519_key.pub").startswith(identity.host_key_public)
    assert (inode_mode(disk, f"{upper}/etc/ssh/ssh_host_ed25519_key")) == 0o600
    for directory in (upper, f"{upper}/etc", f"{upper}/etc/ssh"):
        assert (inode_mode(disk, directory)) == 0o755, directory
    assert "Type: directory" in debugfs(disk, f"stat {boot.OVERLAY_WORK}")
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.ext4"]  # no temp files left


def test_overlay_disk_refuses_to_overwrite(identity: guest.GuestIdentity, tmp_path: Path) -> None:
    disk = tmp_path / "overlay.ext4"
    disk.write_bytes(b"precious")
    with pytest.raises(GuestSetupError, match="already exists"):
        guest.create_overlay_disk(disk, 64 << 20, identity)
    assert disk.read_bytes() == b"precious"


def test_too_small_disk_leaves_nothing(identity: guest.GuestIdentity, tmp_path: Path) -> None:
    with pytest.raises(GuestSetupError, match="too small"):
        guest.create_overlay_disk(tmp_path / "overlay.ext4", 1 << 20, identity)
    assert list(tmp_path.iterdir()) == []


def test_mkfs_failure_leaves_nothing(identity: guest.GuestIdentity, tmp_path: Path) -> None:
    # 16 MiB cannot hold a staging dir with a 40 MiB file: mkfs fails, no half-made disk remains
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "big").write_bytes(os.urandom(1 << 20) * 40)
    with pytest.raises(GuestSetupError, match=r"mkfs\.ext4 failed for work\.ext4"):
        guest.create_work_disk(tmp_path / "work.ext4", 16 << 20, staging)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging"]


def test_work_disk_with_authorized_keys(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEexampleEXAMPLEexampleEXAMPLEexampl banger"
    target = guest.stage_authorized_keys(staging, key)
    assert target == staging / ".ssh/authorized_keys"
    assert stat.S_IMODE((staging / ".ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    (staging / "notes.txt").write_text("synced file\n")
    disk = tmp_path / "work.ext4"
    guest.create_work_disk(disk, 256 << 20, staging)
    assert debugfs(disk, "cat .ssh/authorized_keys") == key + "\n"
    assert debugfs(disk, "cat notes.txt") == "synced file\n"
    assert (inode_mode(disk, ".ssh")) == 0o700
    assert (inode_mode(disk, ".ssh/authorized_keys")) == 0o600


@pytest.mark.parametrize(
    "key",
    ["", "not a key", "ssh-ed25519 AAAA\nssh-rsa BBBB", "ssh-ed25519 AAAA==\x00x", 'command="x" ssh-ed25519 AAAA'],
)
def test_bad_public_keys_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(GuestSetupError):
        guest.stage_authorized_keys(tmp_path, key)
    assert list(tmp_path.iterdir()) == []


def test_work_disk_needs_its_staging_dir(tmp_path: Path) -> None:
    with pytest.raises(GuestSetupError, match="does not exist"):
        guest.create_work_disk(tmp_path / "work.ext4", 64 << 20, tmp_path / "missing")


def test_kernel_cmdline() -> None:
    assert guest.kernel_cmdline("web-1", NET, ["tsc_early_khz=2596150"]) == (
        "console=ttyS0 panic=-1 quiet loglevel=3 systemd.show_status=0 net.ifnames=0 "
        "banger.proto=1 banger.hostname=web-1 "
        "banger.ip=10.0.2.15/24 banger.gw=10.0.2.2 banger.dns=10.0.2.3 tsc_early_khz=2596150"
    )
    assert guest.kernel_cmdline("web-1", None, quiet=False) == (
        "console=ttyS0 panic=-1 net.ifnames=0 banger.proto=1 banger.hostname=web-1"
    )


@pytest.mark.parametrize(
    ("hostname", "net", "extra", "message"),
    [
        ("Bad", NET, (), "invalid VM name"),
        ("web", GuestNetConfig("10.0.2.300", 24, "10.0.2.2", "10.0.2.3"), (), "not an IPv4 address"),
        ("web", GuestNetConfig("10.0.2.15", 33, "10.0.2.2", "10.0.2.3"), (), "prefix length"),
        ("web", GuestNetConfig("10.0.2.15", 24, "fe80::1", "10.0.2.3"), (), "gateway"),
        ("web", NET, ("init=/bin/sh quiet",), "no spaces"),
        ("web", NET, ("banger.ip=1.2.3.4/8",), "reserved"),
        ("web", NET, ("",), "invalid extra"),
    ],
)
def test_kernel_cmdline_refuses_bad_values(
    hostname: str, net: GuestNetConfig, extra: tuple[str, ...], message: str
) -> None:
    with pytest.raises(GuestSetupError, match=message):
        guest.kernel_cmdline(hostname, net, extra)


def test_known_hosts_line_is_understood_by_ssh_keygen(identity: guest.GuestIdentity, tmp_path: Path) -> None:
    patterns = ["web-1.vm", host_pattern("127.0.0.1", 2222)]
    line = known_hosts_line(patterns, identity)
    assert line == f"web-1.vm,[127.0.0.1]:2222 {identity.host_key_public}\n"
    known = tmp_path / "known_hosts"
    known.write_text(line)
    found = subprocess.run(
        ["ssh-keygen", "-F", "[127.0.0.1]:2222", "-f", str(known)], capture_output=True, text=True, check=True
    )
    assert identity.host_key_public in found.stdout
    assert host_pattern("web-1.vm") == "web-1.vm"


@pytest.mark.parametrize("pattern", ["", "a b", "a,b"])
def test_known_hosts_line_refuses_bad_patterns(identity: guest.GuestIdentity, pattern: str) -> None:
    with pytest.raises(ValueError):
        known_hosts_line([pattern], identity)
    with pytest.raises(ValueError):
        known_hosts_line([], identity)


def test_host_pattern_refuses_bad_ports() -> None:
    with pytest.raises(ValueError):
        host_pattern("127.0.0.1", 0)
    with pytest.raises(ValueError):
        host_pattern("[::1]", 22)


def test_marker_watch_reads_each_byte_once_and_follows_a_rotation(tmp_path: Path) -> None:
    from banger_core.daemon.guest import MarkerWatch

    log = tmp_path / "serial.log"
    log.write_bytes(b"boot noise\n" * 100_000)  # 1.1 MB before the marker
    watch = MarkerWatch(log, b"BANGER-READY")
    assert not watch.seen() and watch.bytes_read == 1_100_000
    assert not watch.seen() and watch.bytes_read == 1_100_000  # nothing new: nothing read
    with log.open("ab") as fh:
        fh.write(b"more BANGER-RE")
    assert not watch.seen() and watch.bytes_read == 1_100_014
    with log.open("ab") as fh:
        fh.write(b"ADY\n")  # the marker, split across two reads
    assert watch.seen() and watch.bytes_read == 1_100_018

    rotated_watch = MarkerWatch(log, b"BANGER-READY")
    log.write_bytes(b"x" * 50)
    assert not rotated_watch.seen()
    log.rename(tmp_path / "serial.log.1")  # the pump rotates: a new, shorter file
    log.write_bytes(b"BANGER-READY\n")
    assert rotated_watch.seen() and rotated_watch.bytes_read == 63
