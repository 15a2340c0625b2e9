"""The device memory budget (`gpu.memory_limit`) shared by every collection on one device.

Each gpu.matrix.DeviceMatrix reserves its device bytes on behalf of its owner (a segment).
When a reservation does not fit, the coldest *sealed* resident owners (least recently
searched) are moved to host memory to make room; if that is still not enough, the requesting
owner stays in host memory and is searched on the CPU. Nothing fails for lack of device memory.
The budget belongs to a gpu.device.Device (`device.budget`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Protocol

from gpu.config import resolve_memory_limit

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
        # id(holder) → (holder, owner, bytes); the holder is what holds the device memory
        # (a matrix), the owner what moves to host as a whole (its segment)
        self._held: dict[int, tuple[weakref.ref[Any], weakref.ref[Any], int]] = {}

    def configure(self, limit: Any, total_bytes: int | None) -> int | None:
        """`limit`: None (90% of the device), bytes, or a fraction (0, 1] of device memory."""
        self.limit = resolve_memory_limit(limit, total_bytes)
        return self.limit

    def held_by(self, owner: Any) -> int:
        with self._lock:
            return sum(nbytes for h, o, nbytes in self._held.values()
                       if h() is owner or o() is owner)

    def reserve(self, owner: Resident, nbytes: int, holder: Any = None) -> bool:
        """Set `holder`'s reservation (default: the owner's own) to `nbytes`; evicts cold
        sealed owners if needed. False: it does not fit, the caller stays on the host."""
        holder = owner if holder is None else holder
        while True:
            with self._lock:
                entry = self._held.get(id(holder))
                have = entry[2] if entry else 0
                if self.limit is None or self.used - have + nbytes <= self.limit:
                    self._set(holder, owner, nbytes, have)
                    return True
                victim = self._coldest(exclude=owner)
            if victim is None:
                return False
            log.info("device budget full: moving a cold sealed segment to host memory")
            victim.move_to_host()  # releases its reservations
            if self.held_by(victim):
                self.release(victim)

    def _set(self, holder: Any, owner: Any, nbytes: int, have: int) -> None:
        key = id(holder)
        if key not in self._held:
            weakref.finalize(holder, self._drop, key)
        self._held[key] = (weakref.ref(holder), weakref.ref(owner), nbytes)
        self.used += nbytes - have

    def _drop(self, key: int) -> None:
        with self._lock:
            entry = self._held.pop(key, None)
            if entry:
                self.used -= entry[2]

    def release(self, holder_or_owner: Any) -> None:
        """Drop a holder's reservation, or every reservation of an owner."""
        with self._lock:
            keys = [k for k, (h, o, _) in self._held.items()
                    if h() is holder_or_owner or o() is holder_or_owner]
        for key in keys:
            self._drop(key)

    def _coldest(self, exclude: Any) -> Resident | None:
        best, best_t = None, float("inf")
        for _, ref, nbytes in self._held.values():
            o = ref()
            if o is None or o is exclude or not o.sealed or nbytes == 0:
                continue
            if o.last_used < best_t:
                best, best_t = o, o.last_used
        return best

    def stats(self) -> dict[str, Any]:
        with self._lock:
            owners = {id(o()) for _, o, _ in self._held.values() if o() is not None}
            return {"limit_bytes": self.limit, "used_bytes": self.used,
                    "resident_segments": len(owners)}


def now() -> float:
    return time.monotonic()
