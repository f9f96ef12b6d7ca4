"""Ctrl-C, `kill -INT` and `kill -TERM` as KeyboardInterrupt, for long work that saves or shuts down cleanly
(training, encoder training, the viewer)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def interrupt_on_signals() -> dict:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt; returns the previous handlers for `restore_signals`.

    Installed explicitly: a process started in the background by a non-interactive shell (or by a test
    runner) inherits an *ignored* SIGINT, and Python then never raises KeyboardInterrupt. Only the main
    thread can install handlers; elsewhere nothing changes (and {} is returned)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _raise_interrupt) for sig in _SIGNALS}


def restore_signals(old: dict) -> None:
    """Put back the handlers `interrupt_on_signals` replaced."""
    for sig, handler in old.items():
        signal.signal(sig, handler)


@contextmanager
def saving_on_interrupt(save: Callable[[], None]) -> Iterator[None]:
    """Run the block with Ctrl-C, `kill -INT` and `kill -TERM` raising KeyboardInterrupt; when it ends,
    finished or interrupted, call save() (a checkpoint) and then re-raise the interruption. Any other
    error propagates without saving. The handlers are put back either way."""
    handlers = interrupt_on_signals()
    interrupted = None
    try:
        yield
    except KeyboardInterrupt as exc:
        interrupted = exc
    finally:
        restore_signals(handlers)
    save()
    if interrupted is not None:
        raise interrupted
