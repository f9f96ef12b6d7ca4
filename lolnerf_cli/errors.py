"""Typed errors. The library raises these; cli.py turns them into one line on stderr and an exit code."""

from __future__ import annotations

from pathlib import Path


class LolnerfError(Exception):
    """A runtime failure that is not the user's fault (exit status 1)."""

    exit_code = 1


class InputError(LolnerfError):
    """Bad usage or bad input (exit status 2). Always names the file (or flag) and the problem."""

    exit_code = 2

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason.rstrip(".")
        super().__init__(str(self))

    def __str__(self) -> str:  # one clear sentence
        if self.path is None:
            return f"{self.reason}."
        return f"{self.path}: {self.reason}."
