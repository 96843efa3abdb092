"""A progress sink that discards everything, for work nobody watches (background cleanup, start-up)."""

from __future__ import annotations


class NullProgress:
    def step(self, message: str) -> None:
        pass

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        pass
