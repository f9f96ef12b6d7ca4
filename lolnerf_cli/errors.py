"""Typed errors. The library raises these; cli.py turns them into one line on stderr and an exit code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable


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


_NAME = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class ParamError(InputError):
    """A bad value of a library function's parameter. `param` is its name (several joined by "/"), and the
    reason may mention parameters as {name}. Shown as is, these read as the parameter names (for library
    users); the commands show them as their command-line flags (`as_flags`, used by app.guarded)."""

    def __init__(self, param: str, reason: str):
        self.param = param
        self.template = reason
        super().__init__(param, _NAME.sub(lambda m: m.group(1), reason))

    def as_flags(self, flag: Callable[[str], str]) -> InputError:
        """The same error naming flags: flag(parameter name) -> e.g. "--steps"."""
        where = "/".join(flag(p) for p in self.param.split("/"))
        return InputError(where, _NAME.sub(lambda m: flag(m.group(1)), self.template))
