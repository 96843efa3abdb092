"""build_rootfs makes the image bootable by banger, without privileges, or says in one line why it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from banger_core.testing import RecordingProgress
from banger_oci.bootable import (
    INSTALL_SSHD_UNIT_TEXT,
    PACKAGE_MANAGERS,
    NotBootableError,
    golden_dir,
    install_sshd_script,
    package_manager,
)
from banger_oci.ext4 import build_rootfs
from banger_oci.flatten import flatten
from banger_oci.layers import Layer
from plugins.oci.tests.ocifs_kit import ZSTD, E, Seen, d, read_ext4, write_layer
from plugins.oci.tests.test_ext4 import EXPECTED, Quiet, comparable, image_layers

E2FSCK = "/usr/sbin/e2fsck"
GOLDEN_FILES = golden_dir() / "files"


def golden(name: str) -> bytes:
    return (GOLDEN_FILES / name).read_bytes()


def added(data: bytes, mode: int = 0o644) -> Seen:
    return Seen("file", mode, 0, 0, 1, 0, data=data)


#: What build_rootfs adds to EXPECTED (image_layers has no "." entry: the root's mtime is 0).
BOOT_PIECES: dict[str, Seen] = {
    "etc/fstab": added(b""),
    "etc/machine-id": added(b"", 0o444),
    "etc/ssh": Seen("dir", 0o755, 0, 0, 3, 1_700_000_000),
    "etc/ssh/sshd_config.d": Seen("dir", 0o755, 0, 0, 2, 0),
    "etc/ssh/sshd_config.d/banger.conf": added(golden("sshd-banger.conf")),
    "etc/ssh/sshd_config.d/banger-hostkey.conf": added(golden("sshd-hostkey.conf")),
    "etc/ssh/sshd_config": Seen("file", 0o644, 0, 0, 1, 1_700_000_000, data=b"Include x\n"),
    "etc/systemd": Seen("dir", 0o755, 0, 0, 3, 0),
    "etc/systemd/system": Seen("dir", 0o755, 0, 0, 3, 0),
    "etc/systemd/system/banger-ready.service": added(golden("banger-ready.service")),
    "etc/systemd/system/multi-user.target.wants": Seen("dir", 0o755, 0, 0, 2, 0),
    "etc/systemd/system/multi-user.target.wants/banger-ready.service": Seen(
        "symlink", 0o777, 0, 0, 1, 0, data=b"/etc/systemd/system/banger-ready.service"
    ),
    "usr/lib/banger": Seen("dir", 0o755, 0, 0, 2, 0),
    "usr/lib/banger/banger-ready": added(golden("banger-ready"), 0o755),
    "root": Seen("dir", 0o700, 0, 0, 2, 0),
    "proc": Seen("dir", 0o755, 0, 0, 2, 0),
    "sys": Seen("dir", 0o755, 0, 0, 2, 0),
}


def with_ssh_config(directory: Path, upper_media_type: str = ZSTD) -> list[Layer]:
    """The test image plus what openssh-server leaves in a container image: a config and host keys."""
    ssh = [
        d("etc/ssh"),
        E("etc/ssh/sshd_config", data=b"Include x\n"),
        E("etc/ssh/ssh_host_ed25519_key", data=b"secret", mode=0o600),
        E("etc/ssh/ssh_host_ed25519_key.pub", data=b"public"),
    ]
    return [*image_layers(directory, upper_media_type), write_layer(directory, ssh)]


def expected_bootable() -> dict[str, Seen]:
    tree = {**EXPECTED, **BOOT_PIECES}
    tree["etc"] = Seen("dir", 0o700, 0, 0, 4, 1_700_000_005)  # + etc/ssh and etc/systemd
    tree["usr/lib"] = Seen("dir", 0o755, 0, 0, 4, 1_700_000_000)  # + usr/lib/banger
    return tree


@pytest.mark.integration  # needs root to drop it: the build runs with no capabilities at all
def test_build_rootfs_needs_no_privileges_and_adds_the_boot_pieces(tmp_path: Path) -> None:
    layers = with_ssh_config(tmp_path / "blobs")
    image = tmp_path / "rootfs.ext4"
    code = (
        "import sys; from pathlib import Path; from banger_oci.ext4 import build_rootfs; "
        "from banger_oci.layers import Layer; from plugins.oci.tests.test_ext4 import Quiet; "
        "layers = [Layer(Path(p), m, i) for p, m, i in zip(*[iter(sys.argv[2:])] * 3)]; "
        "print(build_rootfs(layers, Path(sys.argv[1]), Quiet()))"
    )
    argv = [str(image), *[str(v) for layer in layers for v in (layer.path, layer.media_type, layer.diff_id)]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    no_caps = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"]
    done = subprocess.run([*no_caps, sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == image.stat().st_size
    assert image.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "rootfs.ext4"]
    subprocess.run([E2FSCK, "-fn", str(image)], check=True, capture_output=True)
    assert comparable(read_ext4(image, tmp_path / "read")) == expected_bootable()


def refused(tmp_path: Path, layers: list[Layer], match: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotBootableError, match=match) as caught:
        build_rootfs(layers, out / "rootfs.ext4", Quiet())
    assert "\n" not in str(caught.value)
    assert list(out.iterdir()) == []


def test_an_image_without_sshd_is_refused_with_the_documented_ways(tmp_path: Path) -> None:
    layers = [*image_layers(tmp_path / "blobs"), write_layer(tmp_path / "blobs", [E("usr/sbin/.wh.sshd")])]
    refused(
        tmp_path,
        layers,
        r"^the image has no openssh-server \(/usr/sbin/sshd\) and banger reaches its VMs over ssh: pull it with "
        r"--with-sshd to install it at first boot with the image's package manager \(apt-get, apk or dnf; the VM "
        r"needs network\), or build the image with it \(apt-get install -y openssh-server\), "
        r"see docs/oci-import.md#images-without-sshd$",
    )


#: Each family's package manager as its images have it, and the install line the first-boot script runs.
FAMILIES = {
    "apt-get": (
        "usr/bin/apt-get",
        b"if apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        b"openssh-server; then",
    ),
    "apk": ("usr/sbin/apk", b"if apk add --no-cache openssh-server; then"),  # /sbin/apk: sbin -> usr/sbin here
    "dnf": ("usr/bin/dnf", b"if dnf install -y openssh-server; then"),
}


def without_sshd(directory: Path, *extra: E) -> list[Layer]:
    """The test image with its sshd whited out, plus ``extra`` entries."""
    return [*image_layers(directory), write_layer(directory, [E("usr/sbin/.wh.sshd"), *extra])]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_with_sshd_bakes_the_first_boot_install_for_the_image_family(family: str, tmp_path: Path) -> None:
    path, install_line = FAMILIES[family]
    layers = without_sshd(tmp_path / "blobs", E(path, data=b"package manager", mode=0o755))
    image = tmp_path / "rootfs.ext4"
    progress = RecordingProgress()
    build_rootfs(layers, image, progress, with_sshd=True)
    subprocess.run([E2FSCK, "-fn", str(image)], check=True, capture_output=True)
    seen = read_ext4(image, tmp_path / "read")

    script = seen["/usr/lib/banger/banger-install-sshd"]
    assert (script.type, script.mode, script.uid, script.gid) == ("file", 0o755, 0, 0)
    installs = {name: install for name, _, install in PACKAGE_MANAGERS}
    assert script.data == install_sshd_script(family, installs[family])
    assert script.data.startswith(b"#!/bin/sh\n") and install_line in script.data
    assert b"installed && exit 0\n" in script.data  # idempotent: a later boot of the VM does nothing
    (tmp_path / "script").write_bytes(script.data)
    subprocess.run(["sh", "-n", str(tmp_path / "script")], check=True)  # POSIX sh (dash) parses it
    unit = seen["/etc/systemd/system/banger-install-sshd.service"]
    assert (unit.type, unit.mode, unit.data) == ("file", 0o644, INSTALL_SSHD_UNIT_TEXT.encode())
    for line in (b"Before=banger-ready.service", b"StandardOutput=journal+console", b"WantedBy=multi-user.target"):
        assert line in unit.data
    wants = seen["/etc/systemd/system/multi-user.target.wants/banger-install-sshd.service"]
    assert (wants.type, wants.data) == ("symlink", b"/etc/systemd/system/banger-install-sshd.service")
    assert "/usr/sbin/sshd" not in seen
    assert "the image has no openssh-server: each VM installs it at its first boot (--with-sshd)" in progress.steps


def test_the_package_manager_is_detected_per_family(tmp_path: Path) -> None:
    for family, (path, _) in FAMILIES.items():
        blobs = tmp_path / family
        tree = flatten(without_sshd(blobs, E(path, data=b"x", mode=0o755)), blobs, Quiet())
        found = package_manager(tree)
        assert found is not None and found[0] == family
    blobs = tmp_path / "none"
    assert package_manager(flatten(without_sshd(blobs), blobs, Quiet())) is None
    # apt-get wins over a dnf someone also installed (Debian first, as PACKAGE_MANAGERS orders them)
    blobs = tmp_path / "both"
    both = without_sshd(blobs, E("usr/bin/dnf", data=b"x"), E("usr/bin/apt-get", data=b"x"))
    assert package_manager(flatten(both, blobs, Quiet())) == ("apt-get", PACKAGE_MANAGERS[0][2])


def test_with_sshd_and_no_known_package_manager_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotBootableError) as caught:
        build_rootfs(without_sshd(tmp_path / "blobs"), out / "rootfs.ext4", Quiet(), with_sshd=True)
    assert str(caught.value) == (
        "--with-sshd: the image has no package manager banger knows (apt-get, apk, dnf) to install openssh-server "
        "with: build the image with openssh-server instead, see docs/oci-import.md#images-without-sshd"
    )
    assert list(out.iterdir()) == []


def test_with_sshd_changes_nothing_in_an_image_that_has_sshd(tmp_path: Path) -> None:
    image = tmp_path / "rootfs.ext4"
    build_rootfs(with_ssh_config(tmp_path / "blobs"), image, Quiet(), with_sshd=True)
    assert comparable(read_ext4(image, tmp_path / "read")) == expected_bootable()


def test_an_image_without_init_is_refused_with_the_fix(tmp_path: Path) -> None:
    # /sbin -> usr/sbin -> init -> ../lib/systemd/systemd: break the last hop
    layers = [*image_layers(tmp_path / "blobs"), write_layer(tmp_path / "blobs", [E("usr/lib/systemd/.wh.systemd")])]
    refused(tmp_path, layers, r"no /sbin/init.*systemd-sysv")


def test_a_symlink_loop_for_init_is_no_init(tmp_path: Path) -> None:
    loop = [E("usr/sbin/init", tarfile.SYMTYPE, link="init2"), E("usr/sbin/init2", tarfile.SYMTYPE, link="init")]
    refused(tmp_path, [*image_layers(tmp_path / "blobs"), write_layer(tmp_path / "blobs", loop)], "no /sbin/init")
