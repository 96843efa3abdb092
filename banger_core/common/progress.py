"""Progress sinks used by the core (the daemon streams them to the CLI)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, TypedDict


class StepEvent(TypedDict):
    """A new phase of the operation (``==> pulling debian-bookworm``)."""

    event: Literal["step"]
    message: str


class AdvanceEvent(TypedDict):
    """``done`` of ``total`` units (``total`` None: unknown) of the current step."""

    event: Literal["progress"]
    done: int
    total: int | None
    unit: str


class LogEvent(TypedDict):
    """A detail line, shown with ``-v``."""

    event: Literal["log"]
    message: str


class CreatedEvent(TypedDict):
    """The VM exists (``vm create``/``vm run`` stream it before booting it)."""

    event: Literal["created"]
    name: str


ProgressEvent = StepEvent | AdvanceEvent | LogEvent | CreatedEvent
#: Where :class:`EventProgress` sends events: the daemon's NDJSON stream, or the CLI's printer for local work.
#: A plain dict, because the same sinks carry the stream's other events (``result``, ``error``).
EventSink = Callable[[dict[str, object]], None]


class NullProgress:
    def step(self, message: str) -> None:
        pass

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        pass


class EventProgress:
    """Turns progress calls into :data:`ProgressEvent` dicts for ``emit`` (thread-safe if ``emit`` is)."""

    def __init__(self, emit: EventSink, logger: logging.Logger | None = None) -> None:
        self._emit = emit
        self._logger = logger

    def step(self, message: str) -> None:
        if self._logger:
            self._logger.info("%s", message)
        self.event({"event": "step", "message": message})

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        self.event({"event": "progress", "done": done, "total": total, "unit": unit})

    def log(self, message: str) -> None:
        if self._logger:
            self._logger.debug("%s", message)
        self.event({"event": "log", "message": message})

    def event(self, event: ProgressEvent) -> None:
        """Send ``event``; the methods above send theirs through here, others call it directly
        (``{"event": "created", "name": ...}``)."""
        self._emit(dict(event))
