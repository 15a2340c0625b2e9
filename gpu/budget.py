"""The device memory budget (`gpu.memory_limit`) shared by every collection.

Segments reserve bytes before they place vectors on the device. When a reservation does not
fit, the coldest *sealed* resident segments (least recently searched) are moved to host memory
to make room; if that is still not enough, the requesting segment stays in host memory and is
searched on the CPU. Nothing fails for lack of device memory.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Protocol

log = logging.getLogger("quiver.gpu")


class Resident(Protocol):
    sealed: bool
    last_used: float

    def move_to_host(self) -> None: ...


class DeviceBudget:
    def __init__(self) -> None:
        self.limit: int | None = None
        self.used = 0
        self._lock = threading.Lock()
        self._held: dict[int, tuple[weakref.ref[Any], int]] = {}  # id(owner) → (owner, bytes)

    def configure(self, limit: Any, total_bytes: int | None) -> int | None:
        """`limit`: None (90% of the device), bytes, or a fraction (0, 1] of device memory."""
        if limit is None:
            self.limit = int(total_bytes * 0.9) if total_bytes else None
        elif isinstance(limit, float) and 0 < limit <= 1:
            self.limit = int(total_bytes * limit) if total_bytes else None
        elif isinstance(limit, int | float) and limit > 1:
            self.limit = int(limit)
        else:
            raise ValueError(f"gpu.memory_limit must be bytes or a fraction in (0, 1], got {limit!r}")
        return self.limit

    def held_by(self, owner: Any) -> int:
        with self._lock:
            entry = self._held.get(id(owner))
            return entry[1] if entry else 0

    def reserve(self, owner: Resident, nbytes: int) -> bool:
        """Grow `owner`'s reservation to `nbytes`; evicts cold sealed segments if needed."""
        while True:
            with self._lock:
                have = self._held.get(id(owner), (None, 0))[1]
                if self.limit is None or self.used - have + nbytes <= self.limit:
                    self._set(owner, nbytes, have)
                    return True
                victim = self._coldest(exclude=owner)
            if victim is None:
                return False
            log.info("device budget full: moving a cold sealed segment to host memory")
            victim.move_to_host()  # releases its reservation
            if self.held_by(victim):
                self.release(victim)

    def _set(self, owner: Any, nbytes: int, have: int) -> None:
        key = id(owner)
        if key not in self._held:
            weakref.finalize(owner, self._drop, key)
        self._held[key] = (weakref.ref(owner), nbytes)
        self.used += nbytes - have

    def _drop(self, key: int) -> None:
        with self._lock:
            entry = self._held.pop(key, None)
            if entry:
                self.used -= entry[1]

    def release(self, owner: Any) -> None:
        self._drop(id(owner))

    def _coldest(self, exclude: Any) -> Resident | None:
        best, best_t = None, float("inf")
        for ref, nbytes in self._held.values():
            o = ref()
            if o is None or o is exclude or not o.sealed or nbytes == 0:
                continue
            if o.last_used < best_t:
                best, best_t = o, o.last_used
        return best

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"limit_bytes": self.limit, "used_bytes": self.used,
                    "resident_segments": len(self._held)}


BUDGET = DeviceBudget()


def now() -> float:
    return time.monotonic()
