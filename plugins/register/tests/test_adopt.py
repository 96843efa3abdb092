"""The register source on its own: checks, hard link or sparse copy, and the user's file never modified."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import ImageRefused, PluginContext
from banger_register import plugin
from banger_register.adopt import S_FEATURE_INCOMPAT, S_STATE, sparse_copy
from banger_register.source import RegisterImageSource, image_name_for
from plugins.register.tests.ext4_kit import Fingerprint, make_ext4, poke_superblock

pytestmark = pytest.mark.unit


@pytest.fixture
def source(plugin_context: PluginContext) -> RegisterImageSource:
    return RegisterImageSource(plugin_context)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


def test_registration_claims_and_config(banger_env: dict[str, str]) -> None:
    (registered,) = plugin.banger_image_sources()
    assert registered.name == "register"
    ctx = make_plugin_context(banger_env)
    driver = registered.factory(ctx)
    assert isinstance(driver, RegisterImageSource)
    assert driver.claims("register:/srv/base.ext4")
    assert not driver.claims("debian-bookworm") and not driver.claims("alpine:3.20")
    assert driver.available() == []
    assert ctx.config["register_kernel_ref"] == "generic-6.1"


@pytest.mark.parametrize(
    ("path", "name"),
    [("/srv/Base.ext4", "base"), ("/srv/my image.img", "my-image.img"), ("/srv/.ext4", "registered")],
)
def test_a_plain_pull_names_the_image_after_the_file(path: str, name: str) -> None:
    assert image_name_for(path) == name


def test_a_file_on_the_same_file_system_is_hard_linked_and_left_untouched(
    source: RegisterImageSource, dest: Path, tmp_path: Path
) -> None:
    rootfs = make_ext4(tmp_path / "base.ext4")
    before = Fingerprint.of(rootfs)

    artifact = source.pull(f"register:{rootfs}", dest, RecordingProgress())

    assert artifact.rootfs == dest / "rootfs.ext4"
    assert os.stat(artifact.rootfs).st_ino == os.stat(rootfs).st_ino
    assert artifact.metadata == {"origin": str(rootfs), "adopted_by": "hard link"}
    assert (artifact.name, artifact.kernel_ref, artifact.size) == ("base", "generic-6.1", 16 << 20)
    assert artifact.sha256 == before.sha256 and artifact.version == before.sha256[:12]
    assert Fingerprint.of(rootfs) == before


def test_the_configured_kernel_is_the_default(banger_env: dict[str, str], dest: Path, tmp_path: Path) -> None:
    driver = RegisterImageSource(make_plugin_context(banger_env, {"register_kernel_ref": "generic-6.6"}))
    artifact = driver.pull(f"register:{make_ext4(tmp_path / 'x.ext4')}", dest, RecordingProgress())
    assert artifact.kernel_ref == "generic-6.6"


def test_sparse_copy_keeps_the_bytes_and_the_holes(tmp_path: Path) -> None:
    original = tmp_path / "sparse"
    with open(original, "wb") as f:
        f.truncate(64 << 20)
        f.seek(1 << 20)
        f.write(b"data" * 1000)
        f.seek(40 << 20)
        f.write(b"tail" * 1000)
    copy = tmp_path / "copy"
    fd = os.open(original, os.O_RDONLY)
    try:
        sparse_copy(fd, 64 << 20, copy, RecordingProgress())
    finally:
        os.close(fd)
    assert copy.read_bytes() == original.read_bytes()
    assert os.stat(copy).st_blocks * 512 < 1 << 20  # the 64 MiB of holes stayed holes


def _refusal(source: RegisterImageSource, dest: Path, path: str) -> str:
    with pytest.raises(ImageRefused) as refused:
        source.pull(f"register:{path}", dest, RecordingProgress())
    assert list(dest.iterdir()) == []
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_bad_paths_are_refused_in_one_line(source: RegisterImageSource, dest: Path, tmp_path: Path) -> None:
    rootfs = make_ext4(tmp_path / "base.ext4")
    before = Fingerprint.of(rootfs)
    (tmp_path / "link.ext4").symlink_to(rootfs)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zeros").write_bytes(bytes(8192))
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))

        assert "is not an absolute path" in _refusal(source, dest, "base.ext4")
        assert "No such file or directory" in _refusal(source, dest, str(tmp_path / "missing.ext4"))
        assert f"is a symbolic link: give the path of the file itself ({rootfs})" in _refusal(
            source, dest, str(tmp_path / "link.ext4")
        )
        for special in ("fifo", "sock"):  # a FIFO is never opened (that would block)
            assert "is not a regular file" in _refusal(source, dest, str(tmp_path / special))
        assert "is not a regular file" in _refusal(source, dest, "/dev/null")
        assert "is not a regular file" in _refusal(source, dest, str(tmp_path))
        assert "is not an ext4 file system (no superblock magic 0xEF53 at byte 1080)" in _refusal(
            source, dest, str(tmp_path / "zeros")
        )
    assert Fingerprint.of(rootfs) == before


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "why"),
    [
        (S_FEATURE_INCOMPAT, "<I", 0x2C6, "is mounted, or was not cleanly unmounted"),  # needs_recovery set
        (S_STATE, "<H", 0x0, "is mounted, or was not cleanly unmounted"),  # valid bit clear
        (S_STATE, "<H", 0x3, "has file system errors recorded"),
    ],
)
def test_a_file_system_in_use_or_damaged_is_refused(
    source: RegisterImageSource, dest: Path, tmp_path: Path, offset: int, fmt: str, value: int, why: str
) -> None:
    rootfs = make_ext4(tmp_path / "base.ext4")
    poke_superblock(rootfs, offset, fmt, value)
    assert why in _refusal(source, dest, str(rootfs))


def test_a_file_open_for_writing_by_a_process_is_refused(
    source: RegisterImageSource, dest: Path, tmp_path: Path
) -> None:
    rootfs = make_ext4(tmp_path / "base.ext4")
    with open(rootfs, "r+b") as writable:
        writer = subprocess.Popen(["sleep", "60"], stdout=writable)
    try:
        message = _refusal(source, dest, str(rootfs))
    finally:
        writer.kill()  # our own child, by PID
        writer.wait()
    assert message == f"{rootfs} is open for writing by sleep (pid {writer.pid}): stop it (a running VM, a build) first"
    # A reader is no obstacle: the file is never written.
    with open(rootfs, "rb"):
        assert source.pull(f"register:{rootfs}", dest, RecordingProgress()).name == "base"


def test_banger_own_files_are_refused(source: RegisterImageSource, dest: Path, plugin_context: PluginContext) -> None:
    inside = plugin_context.state_dir / "vms" / "abc"
    inside.mkdir(parents=True)
    disk = make_ext4(inside / "disk.ext4")
    assert "is one of banger's own files" in _refusal(source, dest, str(disk))
