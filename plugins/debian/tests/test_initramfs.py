"""banger's initramfs: module order from modules.dep, archive layout, missing modules."""

from __future__ import annotations

import gzip
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from banger_debian.initramfs import AGENT_PATH, APPLETS, INITRAMFS_MODULES, agent_script, build_initramfs, init_script
from banger_debian.moddep import MissingModuleError, load_order, module_name, parse_modules_dep, resolve

pytestmark = pytest.mark.unit
BUSYBOX = Path("/bin/busybox")


@dataclass
class Member:
    mode: int
    uid: int
    gid: int
    rdev: tuple[int, int]
    data: bytes


def read_newc(archive: bytes) -> dict[str, Member]:
    """Parse a newc cpio archive (test-side reader, independent of the writer)."""
    members: dict[str, Member] = {}
    pos = 0
    while True:
        assert archive[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(archive[pos + 6 + i * 8 : pos + 14 + i * 8], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = archive[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        data = archive[pos : pos + filesize]
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            return members
        members[name] = Member(fields[1], fields[2], fields[3], (fields[9], fields[10]), data)


def test_parse_and_order_follow_dependencies(synth: SimpleNamespace) -> None:
    table = parse_modules_dep(synth.DEP)
    assert table["virtio_net"][1] == ["net_failover", "failover", "virtio", "virtio_ring"]
    order = [module_name(p) for p in load_order(["virtio_net", "virtio_blk", "overlay"], table)]
    assert order == ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net", "virtio_blk", "overlay"]
    for index, name in enumerate(order):
        for dep in table[name][1]:
            assert order.index(dep) < index, f"{dep} must load before {name}"


def test_builtin_modules_need_no_file(synth: SimpleNamespace) -> None:
    table = parse_modules_dep(synth.DEP)
    assert [module_name(p) for p in load_order(["virtio_blk", "ext4"], table, builtin={"ext4"})] == [
        "virtio_ring",
        "virtio",
        "virtio_blk",
    ]


def test_missing_module_names_it(synth: SimpleNamespace) -> None:
    with pytest.raises(MissingModuleError, match="no module vsock"):
        load_order(["overlay", "vsock"], parse_modules_dep(synth.DEP))


def test_missing_dependency_names_who_needs_it() -> None:
    table = parse_modules_dep("kernel/a.ko: kernel/b.ko\n")
    with pytest.raises(MissingModuleError, match=r"no module b \(needed by a\)"):
        load_order(["a"], table)


def test_malformed_modules_dep() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_modules_dep("kernel/a.ko:\nthis is not a dependency line\n")


def test_missing_modules_dep_file(tmp_path: Path) -> None:
    with pytest.raises(MissingModuleError, match=r"modules\.dep is missing"):
        resolve(tmp_path, ["overlay"])


@pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static is not installed (apt-get install busybox-static)")
def test_archive_layout(tmp_path: Path, synth: SimpleNamespace) -> None:
    module_dir = synth.fake_module_tree(tmp_path)
    archive, names = build_initramfs(module_dir, BUSYBOX, ("virtio_net", "virtio_blk", "overlay"))
    assert archive[:2] == b"\x1f\x8b"
    members = read_newc(gzip.decompress(archive))

    assert names == ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net", "virtio_blk", "overlay"]
    modules = sorted(name for name in members if name.startswith("lib/modules/"))
    assert modules == [f"lib/modules/{i:02d}-{n}.ko" for i, n in enumerate(names)]
    # .ko.xz modules are stored uncompressed for busybox insmod
    assert members["lib/modules/06-overlay.ko"].data == b"module overlay"

    console = members["dev/console"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    init = members["init"]
    assert stat.S_ISREG(init.mode) and init.mode & 0o777 == 0o755 and init.data == init_script()
    assert members["bin/busybox"].data == BUSYBOX.read_bytes()
    # the guest agent ships in every initramfs, so every image kind gets it
    assert members[AGENT_PATH].data == agent_script() and b"def serve_virtio_port" in agent_script()
    for applet in APPLETS:
        link = members[f"bin/{applet}"]
        assert stat.S_ISLNK(link.mode) and link.data == b"busybox"
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    # reproducible: same inputs, same bytes
    assert build_initramfs(module_dir, BUSYBOX, ("virtio_net", "virtio_blk", "overlay"))[0] == archive


@pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static is not installed (apt-get install busybox-static)")
def test_archive_unpacks_with_cpio(tmp_path: Path, synth: SimpleNamespace) -> None:
    archive, _ = build_initramfs(synth.fake_module_tree(tmp_path), BUSYBOX, ("overlay",))
    raw = gzip.decompress(archive)
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=raw, capture_output=True, check=True)
    assert {"init", "dev/console", "bin/busybox", "lib/modules/00-overlay.ko"} <= set(listing.stdout.decode().split())


def test_missing_module_fails_the_build(tmp_path: Path, synth: SimpleNamespace) -> None:
    with pytest.raises(MissingModuleError, match="no module virtio_mmio"):
        build_initramfs(synth.fake_module_tree(tmp_path), BUSYBOX)


def test_init_script_is_valid_shell() -> None:
    subprocess.run([str(BUSYBOX), "sh", "-n", "-c", init_script().decode()], check=True)
    text = init_script().decode()
    assert text.startswith("#!/bin/sh\n")
    assert "PROTOCOL=1" in text  # must match banger_hookspecs.boot.BOOT_PROTOCOL


def test_real_kernel_modules_in_dependency_order(kernel_tree: Path) -> None:
    (module_dir,) = (kernel_tree / "lib/modules").iterdir()
    archive, names = build_initramfs(module_dir, BUSYBOX)
    assert set(INITRAMFS_MODULES) <= set(names)
    table = parse_modules_dep((module_dir / "modules.dep").read_text())
    for index, name in enumerate(names):
        assert all(names.index(dep) < index for dep in table[name][1]), name
    assert names.index("virtio_ring") < names.index("virtio") < names.index("virtio_mmio")
    assert names.index("failover") < names.index("net_failover") < names.index("virtio_net")
    assert len(archive) < 4 << 20
