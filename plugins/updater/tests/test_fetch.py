"""Fetching a release over real HTTP on 127.0.0.1 (and file://): bounded, resumable, progress in bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from banger_core.common.errors import BangerError
from banger_updater.fetch import ReleaseSource
from plugins.updater.tests.servers import ReleaseServer

pytestmark = pytest.mark.unit

SIZE = 300_000
DATA = os.urandom(SIZE)


class Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.advances: list[tuple[int, int | None, str]] = []

    def step(self, message: str) -> None:
        pass

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        self.advances.append((done, total, unit))

    def log(self, message: str) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> ReleaseServer:
    root = tmp_path / "releases"
    (root / "v1.0.0").mkdir(parents=True)
    (root / "v1.0.0" / "w.tar").write_bytes(DATA)
    (root / "index.json").write_bytes(b'{"schema": 1, "releases": []}')
    return ReleaseServer(root)


def test_small_files_are_read_whole_and_bounded(server: ReleaseServer) -> None:
    with server.running(), ReleaseSource(server.url + "/") as source:
        assert source.read("index.json", 100) == b'{"schema": 1, "releases": []}'
        with pytest.raises(BangerError, match=r"/index\.json: more than 10 bytes, too large"):
            source.read("index.json", 10)
        with pytest.raises(BangerError) as missing:
            source.read("v9.9.9/manifest.json", 100)
    assert str(missing.value) == (
        f"{server.url}/v9.9.9/manifest.json: not found (HTTP 404): check update_release_url and the version"
    )


def test_a_download_reports_bytes_and_ends_complete(server: ReleaseServer, tmp_path: Path) -> None:
    part = tmp_path / "w.part"
    progress = Recorder()
    with server.running(), ReleaseSource(server.url) as source:
        source.download("v1.0.0/w.tar", part, SIZE, progress)
    assert part.read_bytes() == DATA
    done = [d for d, _, _ in progress.advances]
    assert done[0] == 0 and done[-1] == SIZE and done == sorted(done) and len(done) > 2
    assert {(total, unit) for _, total, unit in progress.advances} == {(SIZE, "B")}


@pytest.mark.parametrize("cut", [4000, 100_000])  # less than one read chunk, and more
def test_a_cut_transfer_is_resumed_by_the_next_run(server: ReleaseServer, tmp_path: Path, cut: int) -> None:
    part = tmp_path / "w.part"
    server.cut["/v1.0.0/w.tar"] = cut
    with server.running(), ReleaseSource(server.url) as source:
        with pytest.raises(BangerError) as stopped:
            source.download("v1.0.0/w.tar", part, SIZE, Recorder())
        assert "run it again to resume the download" in str(stopped.value) and "\n" not in str(stopped.value)
        kept = part.stat().st_size
        assert kept == cut and part.read_bytes() == DATA[:kept]  # every byte received is kept
        progress = Recorder()
        source.download("v1.0.0/w.tar", part, SIZE, progress)
    assert part.read_bytes() == DATA
    assert server.requests[-1] == ("/v1.0.0/w.tar", f"bytes={kept}-")
    assert progress.advances[0][0] == kept  # the bar starts where the last run stopped


def test_a_server_ignoring_the_range_restarts_the_file(server: ReleaseServer, tmp_path: Path) -> None:
    part = tmp_path / "w.part"
    part.write_bytes(DATA[:1000])
    server.honour_range = False
    with server.running(), ReleaseSource(server.url) as source:
        source.download("v1.0.0/w.tar", part, SIZE, Recorder())
    assert part.read_bytes() == DATA


def test_more_bytes_than_the_manifest_says_are_refused_and_dropped(server: ReleaseServer, tmp_path: Path) -> None:
    part = tmp_path / "w.part"
    refused = pytest.raises(BangerError, match=f"more bytes than the {SIZE - 1} the signed manifest lists")
    with server.running(), ReleaseSource(server.url) as source, refused:
        source.download("v1.0.0/w.tar", part, SIZE - 1, Recorder())
    assert not part.exists()


def test_a_complete_part_is_not_fetched_again(server: ReleaseServer, tmp_path: Path) -> None:
    part = tmp_path / "w.part"
    part.write_bytes(DATA)
    with server.running(), ReleaseSource(server.url) as source:
        source.download("v1.0.0/w.tar", part, SIZE, Recorder())
    assert server.requests == []


def test_file_urls_read_and_resume_too(server: ReleaseServer, tmp_path: Path) -> None:
    part = tmp_path / "w.part"
    part.write_bytes(DATA[:5000])
    with ReleaseSource(server.root.as_uri()) as source:
        assert source.read("index.json", 100).startswith(b"{")
        source.download("v1.0.0/w.tar", part, SIZE, Recorder())
    assert part.read_bytes() == DATA


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    with ReleaseSource("http://127.0.0.1:9") as source, pytest.raises(BangerError) as caught:
        source.read("index.json", 100)
    message = str(caught.value)
    assert message.startswith("cannot fetch http://127.0.0.1:9/index.json: ") and "\n" not in message


@pytest.mark.parametrize("url", ["ftp://example.test/r", "releases", "https://", "http://h/r?x=1", "file://rel/x"])
def test_bad_release_urls_are_refused(url: str) -> None:
    with pytest.raises(BangerError, match="update_release_url"):
        ReleaseSource(url)
