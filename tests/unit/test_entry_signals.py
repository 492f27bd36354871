"""The command's signal rules that need no child process (scratchpack/entry.py).

The races themselves (a signal at a random moment of a real run) are in
tests/integration/test_signals.py; this pins down the piece one of them found:
an interrupt raised where Python can only print it is sent again, not lost.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from scratchpack.entry import _unraisable
from scratchpack.errors import Terminated


@pytest.fixture
def received() -> Iterator[list[int]]:
    """SIGINT and SIGTERM recorded instead of acted on, for the test's length."""
    got: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda number, _frame: got.append(number))
    try:
        yield got
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _report(error: BaseException) -> sys.UnraisableHookArgs:
    return SimpleNamespace(  # type: ignore[return-value]
        exc_type=type(error), exc_value=error, exc_traceback=None, err_msg=None, object=None
    )


def test_an_interrupt_lost_in_a_callback_is_sent_again(received: list[int]) -> None:
    _unraisable(_report(KeyboardInterrupt()))
    _unraisable(_report(Terminated(signal.SIGTERM)))
    assert received == [signal.SIGINT, signal.SIGTERM]


def test_any_other_unraisable_error_is_printed_as_python_does(
    received: list[int], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def __del__(self) -> None:
            raise ValueError("in a __del__")

    monkeypatch.setattr(sys, "unraisablehook", _unraisable)
    broken = Broken()
    del broken
    assert received == [] and "ValueError: in a __del__" in capsys.readouterr().err
