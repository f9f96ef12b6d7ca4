"""lolnerf_cli.signals: SIGINT/SIGTERM become KeyboardInterrupt, even after an inherited ignored SIGINT."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from lolnerf_cli.signals import interrupt_on_signals, restore_signals, saving_on_interrupt


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_raise_keyboard_interrupt_and_are_restored(sig):
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)          # as a background job inherits it
    term_before = signal.getsignal(signal.SIGTERM)
    try:
        old = interrupt_on_signals()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)                           # the handler runs before os.kill returns
            for _ in range(10_000):                             # (or at the latest at a later bytecode)
                pass
        restore_signals(old)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == term_before
    finally:
        signal.signal(signal.SIGINT, before)


def test_outside_the_main_thread_nothing_changes():
    got = []
    t = threading.Thread(target=lambda: got.append(interrupt_on_signals()))
    t.start()
    t.join()
    assert got == [{}]


def test_saving_on_interrupt_saves_then_reraises_and_other_errors_do_not_save():
    saved = []
    with pytest.raises(KeyboardInterrupt):
        with saving_on_interrupt(lambda: saved.append("interrupted")):
            raise KeyboardInterrupt
    with saving_on_interrupt(lambda: saved.append("finished")):
        pass
    with pytest.raises(ValueError):
        with saving_on_interrupt(lambda: saved.append("error")):
            raise ValueError("not an interruption")
    assert saved == ["interrupted", "finished"]
