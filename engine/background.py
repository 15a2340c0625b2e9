"""Background work at a lower CPU priority, so searches keep their latency.

Snapshot creation and recovery, index builds and sealed-segment hashing are throughput work;
queries are latency work. Linux keeps a nice value per thread and new threads inherit it, so
such work runs in its own short-lived thread at nice +BACKGROUND_NICE (the helper threads it
starts — hashing, tar pipes — inherit it). Lowering priority needs no privilege; raising it
back would, which is why request threads never lower their own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
BACKGROUND_NICE = 10


def lower_this_thread() -> None:
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + BACKGROUND_NICE))
    except (OSError, AttributeError):  # not Linux, or not permitted: run at normal priority
        pass


def run_low_priority(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` in a fresh low-priority thread and return its result (or raise)."""
    out: dict[str, Any] = {}

    def body() -> None:
        lower_this_thread()
        try:
            out["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc

    t = threading.Thread(target=body, name=f"quiver-bg-{getattr(fn, '__name__', 'task')}",
                         daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["result"]
