"""The command's signal rules that need no child process (scratchpack/entry.py).

The races themselves (a signal at a random moment of a real run) are in
tests/integration/test_signals.py; this pins down the piece one of them found:
an interrupt raised where Python can only print it is raised again, not lost.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from scratchpack.entry import _leave, _raise_lost, _unraisable
from scratchpack.errors import Terminated


def _report(error: BaseException) -> sys.UnraisableHookArgs:
    return SimpleNamespace(  # type: ignore[return-value]
        exc_type=type(error), exc_value=error, exc_traceback=None, err_msg=None, object=None
    )


@pytest.fixture
def alarm(sigint_raises: None) -> Iterator[None]:
    """SIGALRM runs the command's handler, SIGTERM the command's, for the test's length."""
    previous = {
        signal.SIGALRM: signal.signal(signal.SIGALRM, _raise_lost),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _leave),
    }
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize(
    ("error", "expected"),
    [(KeyboardInterrupt(), KeyboardInterrupt), (Terminated(signal.SIGTERM), Terminated)],
)
def test_an_interrupt_lost_in_a_callback_is_raised_again_in_the_flow(
    alarm: None, error: BaseException, expected: type[BaseException]
) -> None:
    _unraisable(_report(error))  # returns: nothing is raised inside the hook
    with pytest.raises(expected) as raised:
        time.sleep(2)  # the alarm comes within milliseconds
    if isinstance(raised.value, Terminated):
        assert raised.value.signum == signal.SIGTERM


def test_a_lost_interrupt_after_the_command_ignores_signals_stays_ignored(alarm: None) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as after a publication's commit
    try:
        _unraisable(_report(KeyboardInterrupt()))
        time.sleep(0.1)  # the alarm comes and goes
    finally:
        signal.signal(signal.SIGINT, previous)


def test_any_other_unraisable_error_is_printed_as_python_does(
    alarm: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def __del__(self) -> None:
            raise ValueError("in a __del__")

    monkeypatch.setattr(sys, "unraisablehook", _unraisable)
    broken = Broken()
    del broken
    assert "ValueError: in a __del__" in capsys.readouterr().err
    time.sleep(0.05)  # and no alarm follows
