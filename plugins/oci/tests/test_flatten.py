"""Layers and flattening: image-spec rules on the in-memory tree, hostile layers refused with one line."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from banger_oci.ext4 import build_rootfs
from banger_oci.flatten import Tree, flatten
from banger_oci.layers import Kind, Layer, LayerError, LayerLimits, read_layer
from plugins.oci.tests.ocifs_kit import GZIP, TAR, ZSTD, E, d, tar_bytes, write_layer
from plugins.oci.tests.test_ext4 import Quiet, image_layers


def merged(tmp_path: Path, *layers: list[E]) -> Tree:
    blobs = tmp_path / "content"
    blobs.mkdir(exist_ok=True)
    return flatten([write_layer(tmp_path / "layers", entries) for entries in layers], blobs, Quiet())


def names(tree: Tree) -> list[str]:
    return [path for path, _ in tree.walk()]


@pytest.mark.parametrize("media_type", [GZIP, ZSTD, TAR, "application/vnd.docker.image.rootfs.diff.tar.gzip"])
def test_every_layer_media_type_reads(media_type: str, tmp_path: Path) -> None:
    layer = write_layer(tmp_path, [E("a", data=b"x" * 100_000)], media_type)
    members = [(m.path, content.read() if content else b"") for m, content in read_layer(layer)]
    assert members == [("a", b"x" * 100_000)]


def test_whiteout_hides_lower_layers_only(tmp_path: Path) -> None:
    tree = merged(
        tmp_path,
        [E("keep/a", data=b"a"), E("keep/b", data=b"b"), E("gone/x", data=b"x")],
        [E("keep/.wh.a"), E(".wh.gone"), E("keep/c", data=b"c")],
        [E("keep/a", data=b"again"), E("keep/.wh.a")],  # same-layer file survives its whiteout
    )
    assert names(tree) == ["/", "/keep", "/keep/a", "/keep/b", "/keep/c"]


def test_opaque_marker_applies_before_its_layer_wherever_it_stands(tmp_path: Path) -> None:
    tree = merged(
        tmp_path,
        [E("dir/lower", data=b"1"), E("dir/sub/deep", data=b"2")],
        [E("dir/.wh..wh..opq"), E("dir/first", data=b"3")],  # marker first
        [E("dir/second", data=b"4"), E("dir/.wh..wh..opq")],  # marker last
    )
    assert names(tree) == ["/", "/dir", "/dir/second"]


def test_directory_over_directory_keeps_content_anything_else_replaces(tmp_path: Path) -> None:
    tree = merged(
        tmp_path,
        [d("etc", mode=0o755), E("etc/x", data=b"x"), d("var/lib"), E("var/lib/y", data=b"y")],
        [d("etc", mode=0o700, uid=7, xattrs={"user.a": b"1"}), E("var/lib", tarfile.SYMTYPE, link="/elsewhere")],
        [d("var/lib")],  # a directory over a symlink replaces it, empty
    )
    etc = tree.lookup("etc")
    assert etc is not None and (etc.mode, etc.uid, etc.xattrs) == (0o700, 7, {"user.a": b"1"})
    assert names(tree) == ["/", "/etc", "/etc/x", "/var", "/var/lib"]


def test_hard_links_share_a_node_until_a_twin_is_replaced(tmp_path: Path) -> None:
    tree = merged(
        tmp_path,
        [E("a", data=b"old")],
        [E("b", tarfile.LNKTYPE, link="a"), E("c", tarfile.LNKTYPE, link="a")],
        [E("a", data=b"new")],
    )
    a, b, c = (tree.lookup(p) for p in "abc")
    assert a is not None and b is not None and b is c and a is not b
    assert b.content is not None and b.content.read_bytes()[b.offset : b.offset + b.size] == b"old"
    counts = tree.link_counts()
    assert (counts[id(a)], counts[id(b)]) == (1, 2)


def hostile(tmp_path: Path, layer: Layer, match: str, limits: LayerLimits | None = None) -> None:
    """``layer`` on top of a good image is refused with one line, and build_rootfs leaves nothing behind."""
    out = tmp_path / "out"
    out.mkdir(parents=True)
    layers = [*image_layers(tmp_path / "good"), layer]
    with pytest.raises(LayerError, match=match) as caught:
        build_rootfs(layers, out / "rootfs.ext4", Quiet(), limits=limits)
    assert "\n" not in str(caught.value), caught.value
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([E("../escape", data=b"x")], r"entry '\.\./escape' has '\.\.' in its name"),
        ([E("a/../../escape", data=b"x")], r"'\.\.' in its name"),
        ([E("/etc/shadow", data=b"x")], "absolute name"),
        ([E("evil", tarfile.LNKTYPE, link="../../etc/shadow")], r"'\.\.' in its name"),
        ([E("evil", tarfile.LNKTYPE, link="/etc/shadow")], "absolute name"),
        ([E("evil", tarfile.LNKTYPE, link="nowhere")], "points at 'nowhere', which is missing"),
        ([E("usr/bin/.wh...")], "names no sibling"),
        ([E("etc/passwd/x", data=b"x")], "lies under 'etc/passwd', which is a file"),
        ([E("loop", tarfile.SYMTYPE, link="loop"), E("loop/x", data=b"x")], "'loop', a symlink to no directory"),
        ([E("dangling", tarfile.SYMTYPE, link="/nowhere"), E("dangling/x")], "'dangling', a symlink to no directory"),
        ([E("x" * 256, data=b"x")], "longer than 255 bytes"),
        ([E("", tarfile.SYMTYPE, link="/")], "replaces the root directory"),
        ([E("big-uid", data=b"x", pax={"uid": str(1 << 32)})], "owner 4294967296:0 does not fit ext4"),
    ],
)
def test_hostile_entries_are_refused(entries: list[E], match: str, tmp_path: Path) -> None:
    hostile(tmp_path, write_layer(tmp_path / "bad", entries), match)


def test_a_giant_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    raw = tar_bytes([E("a", data=b"x", pax={"comment": "y" * (2 << 20)})])
    hostile(tmp_path, write_layer(tmp_path / "bad", [], GZIP, raw=raw), "extended tar header of")


def test_a_decompression_bomb_is_stopped(tmp_path: Path) -> None:
    bomb = write_layer(tmp_path / "bad", [E("zeros", data=bytes(8 << 20))])
    assert bomb.path.stat().st_size < 20_000
    limits = LayerLimits(max_ratio=100, ratio_free_bytes=1 << 20)
    hostile(tmp_path, bomb, "inflates past", limits)
    hostile(tmp_path / "cap", bomb, "inflates past", LayerLimits(max_bytes=4 << 20))


def test_a_wrong_diff_id_is_refused(tmp_path: Path) -> None:
    layer = write_layer(tmp_path / "bad", [E("a", data=b"x")])
    forged = Layer(layer.path, layer.media_type, "sha256:" + "0" * 64)
    hostile(tmp_path, forged, "not the diff_id the image config names")


def test_a_truncated_blob_is_refused(tmp_path: Path) -> None:
    layer = write_layer(tmp_path / "bad", [E("a", data=bytes(range(256)) * 400)])
    layer.path.write_bytes(layer.path.read_bytes()[:-200])
    hostile(tmp_path, layer, "broken layer")


def test_an_unknown_media_type_is_refused(tmp_path: Path) -> None:
    layer = write_layer(tmp_path / "bad", [E("a")])
    hostile(tmp_path, Layer(layer.path, "application/x-rar", layer.diff_id), "unsupported media type")


def test_device_nodes_are_described_never_created(tmp_path: Path) -> None:
    layer = write_layer(tmp_path, [E("dev/sda", tarfile.BLKTYPE, major=8, minor=0, mode=0o660)])
    before = set(tmp_path.rglob("*"))
    [(member, content)] = list(read_layer(layer))
    assert (member.kind, member.major, member.minor, content) == (Kind.BLOCK, 8, 0, None)
    assert set(tmp_path.rglob("*")) == before


def test_gzip_with_trailing_members_is_one_stream(tmp_path: Path) -> None:
    """Some tools write a layer as several gzip members; the diff_id covers them all."""
    raw = tar_bytes([E("a", data=b"1"), E("b", data=b"2")])
    half = len(raw) // 2
    blob = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
    layer = write_layer(tmp_path, [], TAR, raw=raw)
    layer.path.write_bytes(blob)
    gz = Layer(layer.path, GZIP, layer.diff_id)
    assert [m.path for m, _ in read_layer(gz)] == ["a", "b"]
    assert io.BytesIO(blob).read(2) == b"\x1f\x8b"


def test_aufs_metadata_is_ignored(tmp_path: Path) -> None:
    """Old Docker (aufs) layers carry .wh..wh.aufs and .wh..wh.plnk/: reserved names, not files of the image."""
    tree = merged(
        tmp_path,
        [E("a", data=b"a"), E(".wh..wh.aufs"), d(".wh..wh.plnk"), E(".wh..wh.plnk/1.2", data=b"x")],
        [E("etc/.wh..wh.orph/x", data=b"y"), E("b", data=b"b")],
    )
    assert names(tree) == ["/", "/a", "/b"]


def test_reading_keeps_no_list_of_all_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tarfile keeps every TarInfo it read unless told not to: millions of entries would exhaust memory."""
    layer = write_layer(tmp_path, [E(f"f{i}", data=b"x") for i in range(500)])
    kept: list[int] = []
    original = tarfile.TarFile.next

    def next_member(self: tarfile.TarFile) -> tarfile.TarInfo | None:
        kept.append(len(self.members))
        return original(self)

    monkeypatch.setattr(tarfile.TarFile, "next", next_member)
    assert len(list(read_layer(layer))) == 500
    assert max(kept) <= 1


def test_parents_that_are_symlinks_are_followed_inside_the_image(tmp_path: Path) -> None:
    """As Docker (chrooted) and umoci (securejoin) do: e.g. a layer adding lib/x on a usrmerged base."""
    tree = merged(
        tmp_path,
        [d("usr/lib"), E("lib", tarfile.SYMTYPE, link="usr/lib"), E("abs", tarfile.SYMTYPE, link="/usr/lib/../lib")],
        [E("lib/a", data=b"a"), E("abs/b", data=b"b"), E("lib/c", tarfile.LNKTYPE, link="abs/b")],
        [E("abs/.wh.a")],
    )
    assert names(tree) == ["/", "/abs", "/lib", "/usr", "/usr/lib", "/usr/lib/b", "/usr/lib/c"]
    assert tree.lookup("usr/lib/b") is tree.lookup("usr/lib/c")
