"""Progress sinks used by the core (the daemon streams them to the CLI)."""

from __future__ import annotations

import logging
from collections.abc import Callable


class NullProgress:
    def step(self, message: str) -> None:
        pass

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        pass


class EventProgress:
    """Turns progress calls into event dicts for ``emit`` (thread-safe if ``emit`` is)."""

    def __init__(self, emit: Callable[[dict[str, object]], None], logger: logging.Logger | None = None) -> None:
        self._emit = emit
        self._logger = logger

    def step(self, message: str) -> None:
        if self._logger:
            self._logger.info("%s", message)
        self._emit({"event": "step", "message": message})

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        self._emit({"event": "progress", "done": done, "total": total, "unit": unit})

    def log(self, message: str) -> None:
        if self._logger:
            self._logger.debug("%s", message)
        self._emit({"event": "log", "message": message})

    def event(self, event: dict[str, object]) -> None:
        """Another event for the client (e.g. ``{"event": "created", "name": ...}``)."""
        self._emit(event)
