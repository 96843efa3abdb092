"""EventProgress: the progress events the daemon streams and the CLI prints keep their JSON shape."""

from __future__ import annotations

import json
import logging

import pytest

from banger_core.common.progress import EventProgress


def test_event_progress_emits_the_stream_shapes(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[dict[str, object]] = []
    progress = EventProgress(sent.append, logging.getLogger("banger.test"))

    with caplog.at_level(logging.DEBUG, logger="banger.test"):
        progress.step("pulling debian-bookworm")
        progress.advance(512, 1024)
        progress.advance(3, None, unit="files")
        progress.log("cache miss")
        progress.event({"event": "created", "name": "web"})

    assert sent == [
        {"event": "step", "message": "pulling debian-bookworm"},
        {"event": "progress", "done": 512, "total": 1024, "unit": "B"},
        {"event": "progress", "done": 3, "total": None, "unit": "files"},
        {"event": "log", "message": "cache miss"},
        {"event": "created", "name": "web"},
    ]
    assert all(type(event) is dict and json.loads(json.dumps(event)) == event for event in sent)
    # Steps are logged at info, detail lines at debug, for the daemon log.
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "pulling debian-bookworm"),
        (logging.DEBUG, "cache miss"),
    ]
