"""A stage run beside the command (scratchpack/aside.py): its value, its failure and its
warnings reach the command where it asks for the result, and only there."""

from __future__ import annotations

import threading

import pytest

from scratchpack.aside import Aside
from scratchpack.errors import InputError
from scratchpack.notes import collecting, warn


def test_the_value_and_the_warnings_come_when_asked_for_in_order() -> None:
    done = threading.Event()

    def stage(value: int) -> int:
        warn("from the stage")
        done.set()
        return value * 2

    with collecting() as warnings:
        aside = Aside("test", stage, 21)
        done.wait(5)
        warn("from the command")
        assert warnings.messages == ["from the command"]  # not told while it ran
        assert aside.result() == 42
        assert warnings.messages == ["from the command", "from the stage"]
        assert aside.result() == 42 and len(warnings.messages) == 2  # told once


def test_a_failure_is_raised_by_result_with_the_warnings_told_first() -> None:
    def stage() -> None:
        warn("before it failed")
        raise InputError("the stage failed")

    with collecting() as warnings:
        aside = Aside("test", stage)
        with pytest.raises(InputError, match="the stage failed"):
            aside.result()
    assert warnings.messages == ["before it failed"]


def test_a_command_that_never_asks_hears_nothing_of_the_stage() -> None:
    """A command that failed first ends with its own one line: nothing of the stage after."""
    done = threading.Event()

    def stage() -> None:
        warn("too late")
        done.set()

    with collecting() as warnings:
        Aside("test", stage)
        assert done.wait(5)
    assert warnings.messages == []
