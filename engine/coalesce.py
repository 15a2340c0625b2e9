"""Coalescing concurrent searches into batches (group commit, for reads).

The device is efficient on batches: one GEMM for 64 queries costs about what one costs. When
a search arrives while another batch is running on the same collection, it queues; when the
running batch finishes, the first queued request becomes the leader and runs everything that
queued meanwhile as one batch. An idle collection adds no delay at all, and no request
waits for more than the batch in flight plus its own.

A batch that fails (say, one request has the wrong dimension) is retried per request, so an
error is only ever reported to the request that caused it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.plan import SearchSpec

SearchFn = Callable[[list[SearchSpec]], list[Any]]

MAX_BATCH = 1024  # queries per device batch


@dataclass
class _Waiter:
    specs: list[SearchSpec]
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Any] | None = None
    error: BaseException | None = None
    lead: list[_Waiter] | None = None  # set when this waiter must run a batch


class Coalescer:
    """Coalesces calls of a batch search function (`run(specs) -> results`, one per spec).
    The function comes with each call rather than at construction, so a collection that owns
    a coalescer holds no reference cycle through it (its memory maps close by refcount)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._queue: list[_Waiter] = []
        self.batches = 0  # observability: how many batches ran
        self.coalesced = 0  # requests that shared a batch with others

    def search(self, specs: list[SearchSpec], run: SearchFn) -> list[Any]:
        me = _Waiter(specs)
        with self._lock:
            if self._busy:
                self._queue.append(me)
            else:
                self._busy = True
                me.lead = [me]
        if me.lead is None:
            me.done.wait()  # set once: either our results are in, or we lead the next batch
        if me.lead is not None:
            self._run(me.lead, run)
        if me.error is not None:
            raise me.error
        return me.result or []

    def _run(self, batch: list[_Waiter], run: SearchFn) -> None:
        try:
            specs = [s for w in batch for s in w.specs]
            try:
                results = run(specs)
            except Exception:  # noqa: BLE001 - attribute the error to its own request
                results = None
            pos = 0
            for w in batch:
                if results is not None:
                    w.result = results[pos : pos + len(w.specs)]
                    pos += len(w.specs)
                else:
                    try:
                        w.result = run(w.specs)
                    except BaseException as exc:  # noqa: BLE001 - re-raised in its thread
                        w.error = exc
            self.batches += 1
            if len(batch) > 1:
                self.coalesced += len(batch)
        finally:
            self._hand_over(batch)

    def _hand_over(self, finished: list[_Waiter]) -> None:
        with self._lock:
            nxt: list[_Waiter] = []
            count = 0
            while self._queue and (not nxt or count + len(self._queue[0].specs) <= MAX_BATCH):
                w = self._queue.pop(0)
                nxt.append(w)
                count += len(w.specs)
            if nxt:
                nxt[0].lead = nxt
            else:
                self._busy = False
        for w in finished[1:]:
            w.done.set()
        if nxt:
            nxt[0].done.set()
