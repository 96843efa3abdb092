"""build_rootfs / write_ext4: a multi-layer image becomes an ext4 that debugfs reads back exactly."""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from banger_hookspecs import Progress
from banger_oci import ext4
from banger_oci.ext4 import Ext4Error, build_rootfs, write_ext4
from banger_oci.flatten import flatten
from banger_oci.layers import Layer
from plugins.oci.tests.ocifs_kit import (
    CAPABILITY,
    GZIP,
    TAR,
    ZSTD,
    E,
    Seen,
    d,
    read_ext4,
    write_layer,
    write_oci_layout,
)

E2FSCK = "/usr/sbin/e2fsck"
T0 = 1_700_000_000


class Quiet(Progress):
    def step(self, message: str) -> None:
        pass

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        pass


def image_layers(directory: Path, upper_media_type: str = ZSTD) -> list[Layer]:
    """Three layers (gzip, zstd, plain) exercising every rule of the image spec."""
    base = [
        d("etc"),
        E("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
        d("usr"),
        d("usr/bin"),
        E("usr/bin/su", data=b"su", mode=0o4755),
        E("usr/bin/wall", data=b"wall", mode=0o2755, gid=5),
        E("usr/bin/ping", data=b"ping", mode=0o755, xattrs={"security.capability": CAPABILITY, "user.note": b"a\0b"}),
        d("usr/sbin"),
        E("usr/sbin/sshd", data=b"sshd", mode=0o755),
        E("usr/sbin/init", tarfile.SYMTYPE, link="../lib/systemd/systemd", mode=0o777),
        E("usr/lib/systemd/systemd", data=b"systemd", mode=0o755),
        E("sbin", tarfile.SYMTYPE, link="usr/sbin", mode=0o777),
        E("lib", tarfile.SYMTYPE, link="/usr/lib", mode=0o777),
        d("home/dev", mode=0o750, uid=1000, gid=42),
        E("home/dev/notes", data=b"mine", uid=1000, gid=42, mode=0o600),
        d("tmp", mode=0o1777),
        d("dev"),
        E("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
        E("dev/loop0", tarfile.BLKTYPE, mode=0o660, gid=6, major=7, minor=0),
        d("run"),
        E("run/initctl", tarfile.FIFOTYPE, mode=0o600),
        d("data"),
        d("data/a"),
        E("data/a/old", data=b"old"),
        E("data/top", data=b"top"),
        d("old"),
        E("old/gone", data=b"gone"),
        E("old/kept", data=b"kept"),
        d("var/cache/apt"),
        E("var/cache/apt/pkg.bin", data=b"x" * 5000),
        E("shared/orig", data=b"first twin"),
        E("shared/twin", tarfile.LNKTYPE, link="shared/orig"),
        E("opt/keep", data=b"lower layer file"),
    ]
    upper = [
        E("opt/link2", tarfile.LNKTYPE, link="opt/keep"),  # hard link to a lower layer's file
        E("shared/orig", data=b"replaced"),  # replaces one twin: the other keeps the old content
        E("old/.wh.gone"),
        E("data/new", data=b"new"),
        d("etc", mode=0o700, mtime=T0 + 5),  # directory over directory: attributes only
        E("var/cache", data=b"now a file"),  # a file replaces a whole directory
        E("lib/libextra.so", data=b"so"),  # through the lower layer's symlink: lands in usr/lib
        E("data/.wh..wh..opq"),  # opaque marker last in the tar: still hides only the lower data/
    ]
    names = [
        d("weird"),
        E("weird/sp ace", data=b"1"),
        E('weird/q"uote', data=b"2"),
        E("weird/tab\there", data=b"3"),
        E("weird/ünï-cödé", data=b"4"),
        E("weird/latin1-caf\udce9", data=b"5"),  # not UTF-8: the bytes pass through unchanged
        E("weird/-dash", tarfile.FIFOTYPE),
        E("weird/link to space", tarfile.SYMTYPE, link="sp ace", mode=0o777),
    ]
    return [
        write_layer(directory, base, GZIP),
        write_layer(directory, upper, upper_media_type),
        write_layer(directory, names, TAR),
    ]


def f(data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0, links: int = 1, **kw: object) -> Seen:
    return Seen("file", mode, uid, gid, links, T0, data=data, **kw)  # type: ignore[arg-type]


def dr(mode: int = 0o755, links: int = 2, uid: int = 0, gid: int = 0, mtime: int = T0) -> Seen:
    return Seen("dir", mode, uid, gid, links, mtime)


def ln(target: str) -> Seen:
    return Seen("symlink", 0o777, 0, 0, 1, T0, data=target.encode())


#: The merged tree, by path relative to the image root.
EXPECTED: dict[str, Seen] = {
    "data": dr(links=2),
    "data/new": f(b"new"),
    "dev": dr(),
    "dev/loop0": Seen("block", 0o660, 0, 6, 1, T0, rdev=(7, 0)),
    "dev/null": Seen("char", 0o666, 0, 0, 1, T0, rdev=(1, 3)),
    "etc": dr(mode=0o700, mtime=T0 + 5),
    "etc/passwd": f(b"root:x:0:0::/root:/bin/sh\n"),
    "home": dr(links=3, mtime=T0),
    "home/dev": dr(mode=0o750, uid=1000, gid=42),
    "home/dev/notes": f(b"mine", mode=0o600, uid=1000, gid=42),
    "old": dr(),
    "old/kept": f(b"kept"),
    "opt": dr(),
    "opt/keep": f(b"lower layer file", links=2),
    "opt/link2": f(b"lower layer file", links=2),
    "run": dr(),
    "run/initctl": Seen("fifo", 0o600, 0, 0, 1, T0),
    "sbin": ln("usr/sbin"),
    "lib": ln("/usr/lib"),
    "usr/lib/libextra.so": f(b"so"),
    "shared": dr(),
    "shared/orig": f(b"replaced"),
    "shared/twin": f(b"first twin"),
    "tmp": dr(mode=0o1777),
    "usr": dr(links=5),
    "usr/bin": dr(),
    "usr/bin/ping": f(b"ping", mode=0o755, xattrs={"security.capability": CAPABILITY, "user.note": b"a\0b"}),
    "usr/bin/su": f(b"su", mode=0o4755),
    "usr/bin/wall": f(b"wall", mode=0o2755, gid=5),
    "usr/lib": dr(links=3),
    "usr/lib/systemd": dr(),
    "usr/lib/systemd/systemd": f(b"systemd", mode=0o755),
    "usr/sbin": dr(),
    "usr/sbin/init": ln("../lib/systemd/systemd"),
    "usr/sbin/sshd": f(b"sshd", mode=0o755),
    "var": dr(),
    "var/cache": f(b"now a file"),
    "weird": dr(),
    "weird/-dash": Seen("fifo", 0o644, 0, 0, 1, T0),
    "weird/link to space": ln("sp ace"),
    'weird/q"uote': f(b"2"),
    "weird/sp ace": f(b"1"),
    "weird/tab\there": f(b"3"),
    "weird/ünï-cödé": f(b"4"),
    "weird/latin1-caf\udce9": f(b"5"),
}


def comparable(tree: dict[str, Seen]) -> dict[str, Seen]:
    """Relative paths, without the root and inode numbers (only sharing matters, checked separately)."""
    out = {}
    for path, item in tree.items():
        if path != "/":
            out[path.lstrip("/")] = Seen(**{**item.__dict__, "inode": 0})
    return out


@pytest.fixture
def layers(tmp_path: Path) -> list[Layer]:
    return image_layers(tmp_path / "blobs")


def test_write_ext4_keeps_owners_modes_links_xattrs_and_devices(layers: list[Layer], tmp_path: Path) -> None:
    """Parents created implicitly (home/, var/cache/, shared/, opt/, usr/lib/) get 0755 root and the entry's mtime."""
    work = tmp_path / "work"
    (work / "blobs").mkdir(parents=True)
    tree = flatten(layers, work / "blobs", Quiet())
    image = tmp_path / "rootfs.ext4"
    write_ext4(tree, image, work, min_free=1 << 20)
    subprocess.run([E2FSCK, "-fn", str(image)], check=True, capture_output=True)
    seen = read_ext4(image, tmp_path / "read")
    assert comparable(seen) == EXPECTED
    assert seen["/opt/keep"].inode == seen["/opt/link2"].inode
    assert seen["/shared/orig"].inode != seen["/shared/twin"].inode


@pytest.mark.parametrize(
    ("files_per_run", "memory_per_run", "small_file"),
    [(1, 1 << 20, 1 << 20), (3, 4, 2)],  # a debugfs run per file; runs cut by bytes, most files staged on disk
)
def test_the_script_in_chunks_builds_the_same_image(
    files_per_run: int,
    memory_per_run: int,
    small_file: int,
    layers: list[Layer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ext4, "FILES_PER_RUN", files_per_run)
    monkeypatch.setattr(ext4, "MEMORY_PER_RUN", memory_per_run)
    monkeypatch.setattr(ext4, "SMALL_FILE", small_file)
    work = tmp_path / "work"
    (work / "blobs").mkdir(parents=True)
    image = tmp_path / "rootfs.ext4"
    write_ext4(flatten(layers, work / "blobs", Quiet()), image, work, min_free=1 << 20)
    subprocess.run([E2FSCK, "-fn", str(image)], check=True, capture_output=True)
    assert comparable(read_ext4(image, tmp_path / "read")) == EXPECTED
    assert sorted(p.name for p in (work / "blobs").iterdir()) == ["layer1", "layer2", "layer3"]  # one pack a layer


def _host_tree(root: Path) -> dict[str, Seen]:
    out: dict[str, Seen] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kinds = {
            stat.S_IFREG: "file",
            stat.S_IFDIR: "dir",
            stat.S_IFLNK: "symlink",
            stat.S_IFCHR: "char",
            stat.S_IFBLK: "block",
            stat.S_IFIFO: "fifo",
        }
        kind = kinds[stat.S_IFMT(st.st_mode)]
        data = path.read_bytes() if kind == "file" else os.readlink(path).encode() if kind == "symlink" else b""
        xattrs = {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}
        rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else (0, 0)
        item = Seen(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink, int(st.st_mtime), data, rdev)
        item.xattrs = xattrs
        out[str(path.relative_to(root))] = item
    return out


@pytest.mark.integration
def test_same_tree_as_umoci_unpack(tmp_path: Path) -> None:
    """umoci (as root, a real extraction) and the ext4 agree on every object, attribute and link count."""
    layers = image_layers(tmp_path / "blobs", GZIP)  # umoci 0.4.7 reads no zstd
    layout = tmp_path / "layout"
    write_oci_layout(layout, layers)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:test", str(bundle)], check=True, capture_output=True)
    theirs = _host_tree(bundle / "rootfs")
    work = tmp_path / "work"
    (work / "blobs").mkdir(parents=True)
    image = tmp_path / "rootfs.ext4"
    write_ext4(flatten(layers, work / "blobs", Quiet()), image, work, min_free=1 << 20)
    ours = comparable(read_ext4(image, tmp_path / "read"))
    # A host extraction cannot keep directory mtimes: adding a child (or an implicit
    # parent, which umoci stamps "now") changes them. Everything else must agree.
    for tree in (ours, theirs):
        for item in tree.values():
            if item.type == "dir":
                item.mtime = 0
    assert ours == theirs


def test_build_rootfs_refuses_an_existing_file(layers: list[Layer], tmp_path: Path) -> None:
    image = tmp_path / "rootfs.ext4"
    image.write_bytes(b"keep me")
    with pytest.raises(Ext4Error, match="already exists"):
        build_rootfs(layers, image, Quiet())
    assert image.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "rootfs.ext4"]


def test_a_newline_in_a_name_is_refused_with_one_line_and_nothing_left(tmp_path: Path) -> None:
    layers = image_layers(tmp_path / "blobs")
    layers.append(write_layer(tmp_path / "blobs", [E("etc/bad\nname", data=b"x")]))
    image = tmp_path / "out" / "rootfs.ext4"
    image.parent.mkdir()
    with pytest.raises(Ext4Error) as caught:
        build_rootfs(layers, image, Quiet())
    assert "newline" in str(caught.value) and "\n" not in str(caught.value)
    assert list(image.parent.iterdir()) == []


def test_too_small_an_image_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """debugfs errors (here: no space) surface as one line; the half-built image is removed."""
    import banger_oci.ext4 as ext4

    layers = [write_layer(tmp_path / "blobs", [E("big", data=os.urandom(3 << 20))])]
    monkeypatch.setattr(ext4, "estimate_size", lambda tree, min_free: (2 << 20, 128))
    work = tmp_path / "work"
    (work / "blobs").mkdir(parents=True)
    image = tmp_path / "rootfs.ext4"
    with pytest.raises(Ext4Error, match="debugfs could not build the image") as caught:
        write_ext4(flatten(layers, work / "blobs", Quiet()), image, work, min_free=0)
    assert "\n" not in str(caught.value)
    assert not image.exists()


def test_an_image_that_has_lost_and_found_builds(tmp_path: Path) -> None:
    """Images made from a real file system carry lost+found, which mkfs.ext4 creates too."""
    layers = [write_layer(tmp_path / "blobs", [d("lost+found", mode=0o700), E("a", data=b"a")])]
    work = tmp_path / "work"
    (work / "blobs").mkdir(parents=True)
    image = tmp_path / "rootfs.ext4"
    write_ext4(flatten(layers, work / "blobs", Quiet()), image, work, min_free=1 << 20)
    subprocess.run([E2FSCK, "-fn", str(image)], check=True, capture_output=True)
    assert sorted(read_ext4(image, tmp_path / "read")) == ["/", "/a"]


def test_a_lost_and_found_that_is_no_directory_is_refused(tmp_path: Path) -> None:
    layers = [write_layer(tmp_path / "blobs", [E("lost+found", data=b"x")])]
    work = tmp_path / "work"
    (work / "blobs").mkdir(parents=True)
    image = tmp_path / "rootfs.ext4"
    with pytest.raises(Ext4Error, match="/lost\\+found that is not a directory"):
        write_ext4(flatten(layers, work / "blobs", Quiet()), image, work, min_free=1 << 20)
    assert not image.exists()


def test_a_time_before_1970_becomes_the_epoch(tmp_path: Path) -> None:
    """debugfs cannot set a negative time; such a file still lands, stamped 1970-01-01."""
    layers = [write_layer(tmp_path / "blobs", [E("old", data=b"x", mtime=-86_400)])]
    work = tmp_path / "work"
    (work / "blobs").mkdir(parents=True)
    image = tmp_path / "rootfs.ext4"
    write_ext4(flatten(layers, work / "blobs", Quiet()), image, work, min_free=1 << 20)
    assert read_ext4(image, tmp_path / "read")["/old"].mtime == 0
