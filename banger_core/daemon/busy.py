"""What the daemon is in the middle of that a restart would cut short: VM creates and deletes, pulls.

``GET /v1/daemon`` reports it as ``in_progress`` (``{"vm create": 1}``); ``banger update``
refuses to restart the services while it is not empty. Running VMs are not in it: a
restarted daemon adopts them.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from banger_core.daemon.runtime import Runtime


class Busy:
    """A thread-safe count of operations in progress, by kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    @contextmanager
    def hold(self, what: str) -> Iterator[None]:
        with self._lock:
            self._counts[what] += 1
        try:
            yield
        finally:
            with self._lock:
                self._counts[what] -= 1
                if not self._counts[what]:
                    del self._counts[what]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


class _Service(Protocol):
    rt: Runtime


ServiceT = TypeVar("ServiceT", bound=_Service)
P = ParamSpec("P")
R = TypeVar("R")


def busy_while(what: str) -> Callable[[Callable[Concatenate[ServiceT, P], R]], Callable[Concatenate[ServiceT, P], R]]:
    """Decorate a service method: while it runs, its runtime counts one ``what`` in progress."""

    def decorate(method: Callable[Concatenate[ServiceT, P], R]) -> Callable[Concatenate[ServiceT, P], R]:
        @functools.wraps(method)
        def run(self: ServiceT, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with self.rt.busy.hold(what):
                return method(self, *args, **kwargs)

        return run

    return decorate
