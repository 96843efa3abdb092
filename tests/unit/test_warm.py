"""Warm-start templates on disk: sparse copies, the key a template is matched by, what ``find`` accepts."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from banger_core.common.errors import NotFound
from banger_core.daemon.layout import Layout
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.vm.alloc import allocate_ip, template_ip
from banger_core.daemon.vm.warm import BUILDING_PREFIX, TemplateKey, Templates, copy_sparse

pytestmark = pytest.mark.unit

KEY = TemplateKey(
    image="debian-bookworm",
    image_sha256="a" * 64,
    kernel="generic-6.1",
    kernel_sha256="b" * 64,
    vcpus=2,
    memory_mib=3013,
    disk_size=8 << 30,
    backend="qemu",
    network="usernet",
    vmm="qemu 7.2.19 microvm tcg",
)


def templates_in(tmp_path: Path) -> Templates:
    """Templates over a real layout; the runtime and store are not touched by find/remove/copy."""
    rt = SimpleNamespace(layout=Layout(tmp_path / "state", tmp_path / "run"))
    return Templates(cast(Runtime, rt), store=None)  # type: ignore[arg-type]


def save(templates: Templates, key: TemplateKey, *, meta_key: dict[str, object] | None = None) -> Path:
    directory = templates.root / key.digest
    directory.mkdir(parents=True)
    for name in ("state", "overlay.ext4", "work.ext4"):
        (directory / name).write_bytes(b"x")
    meta = {
        "key": meta_key or asdict(key),
        "cmdline": "console=ttyS0",
        "host_key_public": "ssh-ed25519 AAAA",
        "created_at": 1.0,
    }
    (directory / "template.json").write_text(json.dumps(meta))
    return directory


def test_sparse_copy_keeps_the_data_and_the_holes(tmp_path: Path) -> None:
    src = tmp_path / "disk"
    with src.open("wb") as fh:
        fh.truncate(256 << 20)
        fh.seek(1 << 20)
        fh.write(b"superblock" * 1000)
        fh.seek(200 << 20)
        fh.write(os.urandom(1 << 20))
    dest = tmp_path / "copy"
    copy_sparse(src, dest)
    assert dest.stat().st_size == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    assert dest.stat().st_blocks * 512 < 8 << 20  # a few MiB written, not 256


def test_sparse_copy_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        copy_sparse(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"b"


@pytest.mark.parametrize(
    "change",
    [
        {"image_sha256": "c" * 64},  # image re-pulled
        {"kernel_sha256": "d" * 64},  # kernel changed
        {"vcpus": 4},
        {"memory_mib": 2048},
        {"disk_size": 16 << 30},
        {"backend": "firecracker"},
        {"network": "bridge"},
        {"vmm": "qemu 8.2.2 microvm tcg"},  # another QEMU cannot load the stream
    ],
)
def test_a_template_is_not_found_once_any_part_of_its_key_changes(tmp_path: Path, change: dict[str, object]) -> None:
    templates = templates_in(tmp_path)
    save(templates, KEY)
    assert templates.find(KEY) is not None
    changed = dataclasses.replace(KEY, **change)  # type: ignore[arg-type]
    assert changed.digest != KEY.digest
    assert templates.find(changed) is None


def test_find_ignores_incomplete_or_foreign_templates(tmp_path: Path) -> None:
    templates = templates_in(tmp_path)
    directory = save(templates, KEY)
    (directory / "state").unlink()
    assert templates.find(KEY) is None  # a template without its state cannot be restored
    shutil_rm(directory)
    save(templates, KEY, meta_key={**asdict(KEY), "vcpus": 8})  # a digest collision or a hand edit
    assert templates.find(KEY) is None


def shutil_rm(directory: Path) -> None:
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()


def test_remove_deletes_the_images_templates_only(tmp_path: Path) -> None:
    templates = templates_in(tmp_path)
    save(templates, KEY)
    save(templates, dataclasses.replace(KEY, vcpus=4))
    other = dataclasses.replace(KEY, image="alpine")
    save(templates, other)
    assert templates.remove("debian-bookworm") == 2
    assert templates.for_image("debian-bookworm") == []
    assert templates.find(other) is not None
    with pytest.raises(NotFound, match=r"^image debian-bookworm has no warm template: `banger image warm"):
        templates.remove("debian-bookworm")


def test_forgetting_a_deleted_image_is_quiet_when_it_had_no_template(tmp_path: Path) -> None:
    templates = templates_in(tmp_path)
    save(templates, KEY)
    templates.forget_image("alpine")
    templates.forget_image("debian-bookworm")
    assert templates.find(KEY) is None


def test_daemon_start_drops_half_made_templates(tmp_path: Path) -> None:
    templates = templates_in(tmp_path)
    building = templates.root / f"{BUILDING_PREFIX}{KEY.digest}"
    building.mkdir(parents=True)
    (building / "overlay.ext4").write_bytes(b"x")
    # The recorded VMM is a pid that is not that process any more (start time 1): nothing is signalled.
    (building / "vmm.json").write_text(
        json.dumps({"backend": "qemu", "pid": os.getpid(), "start_time": 1, "control_socket": "/nonexistent"})
    )
    save(templates, KEY)
    templates.finish_interrupted()
    assert not building.exists()
    assert templates.find(KEY) is not None


def test_a_new_vm_gets_copies_of_the_template_disks_and_its_agent_token(tmp_path: Path) -> None:
    templates = templates_in(tmp_path)
    directory = save(templates, KEY)
    (directory / "agent.token").write_text("f" * 64)
    template = templates.find(KEY)
    assert template is not None
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir(mode=0o700)
    templates.copy_disks(template, vm_dir)
    assert sorted(p.name for p in vm_dir.iterdir()) == ["agent.token", "overlay.ext4", "work.ext4"]
    assert (vm_dir / "agent.token").read_text() == "f" * 64
    assert (vm_dir / "agent.token").stat().st_mode & 0o777 == 0o600
    assert (vm_dir / "overlay.ext4").read_bytes() == b"x"
    assert not (vm_dir / "overlay.ext4").samefile(directory / "overlay.ext4")  # a copy, never the template's file


@pytest.mark.parametrize(
    ("cidr", "bridge_ip", "expected"),
    [
        ("172.16.0.0/24", "172.16.0.1", "172.16.0.254"),
        ("10.9.0.0/29", "10.9.0.6", "10.9.0.5"),  # the bridge took the last host address
        ("10.9.0.0/31", "10.9.0.0", "10.9.0.1"),  # no network or broadcast address to avoid
        ("10.9.0.0/32", "10.9.0.0", None),  # nothing to spare
    ],
)
def test_bridge_templates_boot_with_the_last_free_address_no_vm_is_given(
    cidr: str, bridge_ip: str, expected: str | None
) -> None:
    network, bridge = ipaddress.IPv4Network(cidr), ipaddress.IPv4Address(bridge_ip)
    assert template_ip(network, bridge) == expected
    if expected is not None:
        hosts = [str(h) for h in network.hosts() if h != bridge and str(h) != expected]
        assert [allocate_ip(network, bridge, set(hosts[:n])) for n in range(len(hosts))] == hosts
