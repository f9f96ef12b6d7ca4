"""Ctrl-C, `kill -INT` and `kill -TERM` as KeyboardInterrupt, for long work that saves or shuts down cleanly
(training, encoder training, the viewer)."""

from __future__ import annotations

import signal
import threading

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
