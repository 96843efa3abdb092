"""The wheelhouse tar is hostile input: only top-level ``*.whl`` regular files, bounded, nothing written outside."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from banger_core.common.errors import BangerError
from banger_updater import wheelhouse
from banger_updater.wheelhouse import unpack
from plugins.updater.tests.release_lab import tar_of

pytestmark = pytest.mark.unit

GOOD = {"banger-0.2.0-py3-none-any.whl": b"w1", "click-8.1.7-py3-none-any.whl": b"w2"}


def special(name: str, kind: bytes, linkname: str = "") -> bytes:
    """A tar whose only member is of ``kind`` (tarfile.SYMTYPE, LNKTYPE, DIRTYPE, CHRTYPE, FIFOTYPE)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)
    return out.getvalue()


def run(tmp_path: Path, data: bytes) -> tuple[Path, list[Path]]:
    tmp_path.mkdir(exist_ok=True)
    tar = tmp_path / "w.tar"
    tar.write_bytes(data)
    into = tmp_path / "wheels"
    return into, unpack(tar, into, "w.tar")


def test_wheels_are_unpacked(tmp_path: Path) -> None:
    into, wheels = run(tmp_path, tar_of(GOOD))
    assert sorted(p.name for p in wheels) == sorted(GOOD)
    assert {p.name: p.read_bytes() for p in into.iterdir()} == GOOD


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (special("banger-1-py3-none-any.whl", tarfile.SYMTYPE, "/etc/shadow"), "is not a regular file"),
        (special("banger-1-py3-none-any.whl", tarfile.LNKTYPE, "/etc/shadow"), "is not a regular file"),
        (special("banger-1-py3-none-any.whl", tarfile.DIRTYPE), "is not a regular file"),
        (special("banger-1-py3-none-any.whl", tarfile.CHRTYPE), "is not a regular file"),
        (special("banger-1-py3-none-any.whl", tarfile.FIFOTYPE), "is not a regular file"),
        (tar_of({"../banger-1-py3-none-any.whl": b"x"}), "is not a wheel file at the top level"),
        (tar_of({"/tmp/banger-1-py3-none-any.whl": b"x"}), "is not a wheel file at the top level"),
        (tar_of({"sub/banger-1-py3-none-any.whl": b"x"}), "is not a wheel file at the top level"),
        (tar_of({".banger-1-py3-none-any.whl": b"x"}), "is not a wheel file at the top level"),
        (tar_of({"banger-1-py3-none-any.whl.sh": b"x"}), "is not a wheel file at the top level"),
        (tar_of({"click-8-py3-none-any.whl": b"x"}), "holds no banger wheel"),
        (tar_of({}), "holds no banger wheel"),
        (b"not a tar at all" * 100, "not a readable tar"),
        (tar_of(GOOD)[:1000], "not a readable tar"),
    ],
)
def test_hostile_members_are_refused_in_one_line(tmp_path: Path, data: bytes, problem: str) -> None:
    with pytest.raises(BangerError) as refused:
        run(tmp_path, data)
    message = str(refused.value)
    assert problem in message and "\n" not in message and message.startswith("w.tar: "), message
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert outside == ["w.tar", "wheels"]  # nothing written beside the scratch directory


def test_a_name_given_twice_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for data in (b"first", b"second"):
            info = tarfile.TarInfo("banger-1-py3-none-any.whl")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BangerError, match=r"member 'banger-1-py3-none-any\.whl' appears twice"):
        run(tmp_path, out.getvalue())


def test_counts_and_sizes_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wheelhouse, "MAX_WHEELS", 1)
    with pytest.raises(BangerError, match="more than 1 members"):
        run(tmp_path / "a", tar_of(GOOD))
    monkeypatch.setattr(wheelhouse, "MAX_WHEELS", 10)
    monkeypatch.setattr(wheelhouse, "MAX_WHEEL_BYTES", 1)
    with pytest.raises(BangerError, match="is 2 bytes, over 1"):
        run(tmp_path / "b", tar_of(GOOD))


def test_a_symlink_planted_in_the_scratch_directory_is_not_followed(tmp_path: Path) -> None:
    """The scratch directory is new (mkdir fails if it exists), so nothing can be planted in it beforehand."""
    into = tmp_path / "wheels"
    into.mkdir()
    (tmp_path / "w.tar").write_bytes(tar_of(GOOD))
    with pytest.raises(FileExistsError):
        unpack(tmp_path / "w.tar", into, "w.tar")
