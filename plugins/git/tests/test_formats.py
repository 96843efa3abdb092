"""The byte formats: tar headers, the sync manifest, and the guest's state answer (hostile input)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from banger_git.entries import FILE, SYMLINK, Entry, is_safe_relpath, symlink_stays_inside
from banger_git.listing import resolves_inside
from banger_git.manifest import GuestFile, encode_manifest, is_unchanged, parse_guest_state, parse_manifest
from banger_git.tarstream import TarWriter, _plain_header, header

pytestmark = pytest.mark.unit


def tarfile_header(entry: Entry) -> bytes:
    info = tarfile.TarInfo(entry.path)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = entry.mode, entry.mtime, 0, 0, "root", "root"
    if entry.kind == SYMLINK:
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    else:
        info.size = entry.size
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize(
    "entry",
    [
        Entry("a/b.txt", FILE, 0o644, 123, 1_700_000_000, ""),
        Entry("x" * 100, FILE, 0o755, 0, 0, ""),
        Entry("link", SYMLINK, 0o777, 0, 5, "", target="a/b.txt"),
        Entry("big", FILE, 0o600, 8**11 - 1, 8**11 - 1, ""),
        Entry("-dash with space", FILE, 0o640, 1, 1, ""),
    ],
)
def test_plain_headers_equal_tarfile_headers(entry: Entry) -> None:
    assert _plain_header(entry) == tarfile_header(entry)


@pytest.mark.parametrize(
    "entry",
    [
        Entry("x" * 101, FILE, 0o644, 1, 1, ""),
        Entry("ünï", FILE, 0o644, 1, 1, ""),
        Entry("huge", FILE, 0o644, 8**11, 1, ""),
        Entry("l", SYMLINK, 0o777, 0, 1, "", target="t" * 101),
        Entry(os.fsdecode(b"\xe9"), FILE, 0o644, 1, 1, ""),
    ],
)
def test_headers_needing_pax_go_through_tarfile(entry: Entry) -> None:
    assert _plain_header(entry) is None
    assert header(entry) == tarfile_header(entry)


def test_writer_output_is_a_tar_that_tarfile_reads(tmp_path: os.PathLike[str]) -> None:
    root = os.fspath(tmp_path)
    contents = {"small": b"s" * 700, "empty": b"", "exact": b"e" * 1024, "large": os.urandom(300_000)}
    for name, data in contents.items():
        with open(os.path.join(root, name), "wb") as fh:
            fh.write(data)
    read_fd, write_fd = os.pipe()
    sink = io.BytesIO()
    with os.fdopen(read_fd, "rb") as reader:
        import threading

        thread = threading.Thread(target=lambda: sink.write(reader.read()))
        thread.start()
        writer = TarWriter(write_fd, tmp_path, lambda n: None)  # type: ignore[arg-type]
        written = writer.add_all(
            [Entry(n, FILE, 0o644, len(d), 0, "") for n, d in contents.items()]
            + [Entry("gone", FILE, 0o644, 3, 0, ""), Entry("ln", SYMLINK, 0o777, 0, 0, "", target="small")]
        )
        writer.close()
        os.close(write_fd)
        thread.join()
    assert [e.path for e in written] == [*contents, "ln"], "a file that vanished is left out"
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue()), mode="r:") as archive:
        got = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]
        assert archive.getmember("ln").linkname == "small"
    assert got == contents
    assert len(sink.getvalue()) % 512 == 0


ENTRIES = [
    Entry("a", FILE, 0o644, 3, 1_700_000_000, "1700000000123456789"),
    Entry("dir/new\nline ü", FILE, 0o755, 0, 5, "0" * 40),
    Entry("ln", SYMLINK, 0o777, 0, 7, "", target="dir/new\nline ü"),
]


def test_manifest_round_trip() -> None:
    records = parse_manifest(encode_manifest(ENTRIES))
    assert records == {e.path: e.record() for e in ENTRIES}


@pytest.mark.parametrize(
    "forge",
    [
        lambda m: m.replace(b"banger-sync-manifest 1", b"banger-sync-manifest 9"),
        lambda m: m[:-1],
        lambda m: m + b"extra\0",
        lambda m: m.replace(b"\0a\0", b"\0../a\0"),
        lambda m: m.replace(b"\0a\0", b"\0/etc/passwd\0"),
        lambda m: m.replace(b"\0a\0", b"\0dir//a\0"),
        lambda m: m.replace(b"\0a\0", b"\0./a\0"),
        lambda m: m.replace(b"\0a\0", b"\0ln\0"),
        lambda m: m.replace(b"\x00f\x00644\x00", b"\x00x\x00644\x00", 1),
        lambda m: m.replace(b"\x00f\x00644\x00", b"\x00f\x004755\x00", 1),
        lambda m: m.replace(b"\x003\0", b"\0-3\0", 1),
        lambda m: m.replace(b"1700000000123456789", b"../../x"),
        lambda m: b"",
    ],
)
def test_malformed_manifests_are_ignored_whole(forge: object) -> None:
    assert parse_manifest(forge(encode_manifest(ENTRIES))) is None  # type: ignore[operator]


def stat_record(path: bytes, kind: bytes, mode: bytes, size: bytes, mtime: bytes, target: bytes = b"") -> bytes:
    return b"\0".join([path, kind, mode, size, mtime, target]) + b"\0"


def test_guest_state_parsing() -> None:
    manifest = encode_manifest(ENTRIES)
    stats = stat_record(b"./a", b"f", b"644", b"3", b"1700000000.0000000000") + stat_record(
        b"./ln", b"l", b"777", b"14", b"99.5", b"dir/new\nline \xc3\xbc"
    )
    answer = b"present\n%d\n" % len(manifest) + manifest + b"stat\n" + stats
    state = parse_guest_state(answer)
    assert state.present and not state.manifest_unreadable
    assert state.files == {
        "a": GuestFile("f", 0o644, 3, 1_700_000_000, ""),
        "ln": GuestFile("l", 0o777, 14, 99, "dir/new\nline ü"),
    }
    assert is_unchanged(ENTRIES[0], state)
    assert is_unchanged(ENTRIES[2], state)
    assert not is_unchanged(ENTRIES[1], state), "the guest did not report it"
    assert not is_unchanged(ENTRIES[0]._replace(stamp="1700000000999999999"), state), "the host file changed"
    assert is_unchanged(ENTRIES[0]._replace(mtime=5), state), "same content under another commit time"


def test_guest_state_ignores_paths_outside_and_bad_records() -> None:
    stats = (
        stat_record(b"./../../etc/shadow", b"f", b"600", b"1", b"1.0")
        + stat_record(b"/abs", b"f", b"600", b"1", b"1.0")
        + stat_record(b"./ok", b"f", b"6x4", b"1", b"1.0")
        + stat_record(b"./fine", b"f", b"644", b"1", b"1.0")
    )
    state = parse_guest_state(b"present\n0\nstat\n" + stats)
    assert state.files == {"fine": GuestFile("f", 0o644, 1, 1, "")}
    assert state.manifest is None and not state.manifest_unreadable


@pytest.mark.parametrize(
    "answer",
    [b"", b"hello\n", b"present\n", b"present\n10\nabc", b"present\n0\nmaybe\n", b"present\n-1\nstat\n"],
)
def test_nonsense_from_the_guest_is_an_error(answer: bytes) -> None:
    with pytest.raises(ValueError, match="unexpected answer from the guest's state query"):
        parse_guest_state(answer)


def test_absent_and_nostat_answers() -> None:
    assert not parse_guest_state(b"absent\n").present
    state = parse_guest_state(b"present\n3\nxyznostat\n")
    assert state.files is None and state.manifest is None and state.manifest_unreadable


@pytest.mark.parametrize(
    ("path", "safe"),
    [("a", True), ("a/b c", True), ("..a", True), ("", False), ("/a", False), ("a/../b", False), ("./a", False)],
)
def test_is_safe_relpath(path: str, safe: bool) -> None:
    assert is_safe_relpath(path) is safe


@pytest.mark.parametrize(
    ("path", "target", "inside"),
    [
        ("a", "b", True),
        ("d/a", "../b", True),
        ("d/a", "../../b", False),
        ("a", "..", False),
        ("a", ".", True),
        ("a", "/abs", False),
        ("a", "", False),
        ("d/e/a", "x/../../../y", True),
        ("d/e/a", "x/../../../../y", False),
    ],
)
def test_symlink_stays_inside(path: str, target: str, inside: bool) -> None:
    assert symlink_stays_inside(path, target) is inside


LINKS = {
    "here": ".",
    "up": "here/..",
    "deep/link": "../here/deep",
    "a": "b",
    "b": "a",
    "abs-via": "abs",
    "abs": "/etc",
    "ok": "deep/link/x",
    "deep/up2": "../../x",
}


@pytest.mark.parametrize(
    ("link", "inside"),
    [
        ("here", True),
        ("up", False),
        ("deep/link", True),
        ("a", False),
        ("abs-via", False),
        ("ok", True),
        ("deep/up2", False),
    ],
)
def test_resolves_inside_follows_the_trees_symlinks(link: str, inside: bool) -> None:
    assert resolves_inside(link, LINKS) is inside
