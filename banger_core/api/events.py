"""Stream events: what a long operation sends, one JSON object per line (NDJSON).

A stream is any number of progress updates (:data:`ProgressUpdate`: ``step``,
``progress``, ``log``, ``created``, ``spec``), then one ``result`` (the
operation's answer, e.g. a :class:`~banger_core.api.models.VmDetail`) or one
``error``; a ``--rm`` session then sends ``heartbeat`` lines while it is held.
The ``event`` key tells them apart.

:class:`EventSink` is the :class:`~banger_hookspecs.Progress` that turns a
service's progress calls into these events (in the daemon, and in the CLI for
work it does itself, such as a workspace sync).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Annotated, Literal, get_args

from pydantic import Field, JsonValue, TypeAdapter

from banger_core.api.models import ApiModel, RunPlan, spec_line


class StepEvent(ApiModel):
    """A new phase: ``creating disks``, ``waiting for ssh``."""

    event: Literal["step"] = "step"
    message: str


class ProgressEvent(ApiModel):
    """Progress inside the current phase (bytes downloaded, files sent)."""

    event: Literal["progress"] = "progress"
    done: int
    total: int | None = None
    unit: str = "B"


class LogEvent(ApiModel):
    """A detail line (tool output), shown with ``-v``."""

    event: Literal["log"] = "log"
    message: str


class CreatedEvent(ApiModel):
    """A create has recorded its VM: from here on the VM exists under ``name``."""

    event: Literal["created"] = "created"
    name: str


class SpecEvent(ApiModel):
    """The spec a create resolved (values and where each came from), before it makes anything."""

    event: Literal["spec"] = "spec"
    plan: RunPlan

    @property
    def line(self) -> str:
        return spec_line(self.plan)


class HeartbeatEvent(ApiModel):
    """A held ``--rm`` session is alive (sent every few seconds after the result)."""

    event: Literal["heartbeat"] = "heartbeat"


class ResultEvent(ApiModel):
    """The operation's answer, in the shape of its route's response model."""

    event: Literal["result"] = "result"
    data: JsonValue


class ErrorEvent(ApiModel):
    """The operation failed: the :mod:`~banger_core.common.errors` class name and its one line."""

    event: Literal["error"] = "error"
    type: str
    message: str


#: What a ``progress`` callback receives.
ProgressUpdate = StepEvent | ProgressEvent | LogEvent | CreatedEvent | SpecEvent
StreamEvent = Annotated[
    StepEvent | ProgressEvent | LogEvent | CreatedEvent | SpecEvent | HeartbeatEvent | ResultEvent | ErrorEvent,
    Field(discriminator="event"),
]
#: The ``event`` tags this side knows, read off the union so a new event type cannot be forgotten here.
_KINDS = frozenset(member.model_fields["event"].default for member in get_args(get_args(StreamEvent)[0]))


@functools.cache
def _adapter() -> TypeAdapter[StreamEvent]:
    return TypeAdapter(StreamEvent)


def parse_event(line: str) -> StreamEvent | None:
    """One stream line as its event; None for a kind this side does not know (a newer daemon's).

    Raises ``ValueError`` (pydantic's ``ValidationError``) for a known kind with a wrong shape.
    """
    data = json.loads(line)
    if not isinstance(data, dict) or data.get("event") not in _KINDS:
        return None
    return _adapter().validate_python(data)


class EventSink:
    """A :class:`~banger_hookspecs.Progress` that hands each call to ``emit`` as a typed event.

    Thread-safe if ``emit`` is. With a ``logger``, steps are logged at INFO and
    log lines at DEBUG (the daemon's log keeps what its clients were shown).
    """

    def __init__(self, emit: Callable[[ProgressUpdate], None], logger: logging.Logger | None = None) -> None:
        self._emit = emit
        self._logger = logger

    def step(self, message: str) -> None:
        if self._logger:
            self._logger.info("%s", message)
        self._emit(StepEvent(message=message))

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        self._emit(ProgressEvent(done=done, total=total, unit=unit))

    def log(self, message: str) -> None:
        if self._logger:
            self._logger.debug("%s", message)
        self._emit(LogEvent(message=message))

    def event(self, event: ProgressUpdate) -> None:
        """An event that is not a progress call (``created``, ``spec``)."""
        if self._logger and isinstance(event, SpecEvent):
            self._logger.info("%s", event.line)
        self._emit(event)
