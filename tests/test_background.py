"""Background work runs in its own thread at a lower CPU priority; results and errors come
back to the caller, and the caller's own priority never changes."""

from __future__ import annotations

import os
import threading

import pytest

from engine.background import BACKGROUND_NICE, run_low_priority


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_runs_lower_and_returns() -> None:
    before = _nice()
    inner = run_low_priority(_nice)
    assert inner == min(19, before + BACKGROUND_NICE)
    assert _nice() == before  # the request thread is untouched


def test_errors_reach_the_caller() -> None:
    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 3"):
        run_low_priority(boom, 3)
