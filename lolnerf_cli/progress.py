"""A tiny progress interface so the library can report long work without printing.

Library functions take `progress: Progress | None`; the CLI passes a rich-backed implementation and
tests pass nothing (the silent default)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class Task:
    def advance(self, n: int = 1, **fields) -> None:  # fields: extra numbers shown beside the bar
        pass

    def update(self, **fields) -> None:
        pass

    def resume_from(self, done: int) -> None:
        """`done` units were finished by an earlier session (a resumed run): shown as done, but not counted
        in the rate that the time remaining is estimated from."""
        pass


class Progress:
    """Silent progress: the default when no terminal is attached."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Task]:
        yield Task()

    def log(self, message: str) -> None:
        pass


SILENT = Progress()


def or_silent(progress: Progress | None) -> Progress:
    return SILENT if progress is None else progress
