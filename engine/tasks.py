"""Long operations as observable tasks: snapshot creation and recovery, transfers to and from
object storage or URLs, HNSW builds, device rehydration.

A task is registered when its work starts, reports progress as it goes (`advance`), and ends
with an outcome: "ok", "failed" (with the reason) or "cancelled". Code deep inside an operation
reports to the task of its thread (`current()`), so progress needs no extra parameters down the
call chain. Cancellation is cooperative: `cancel()` sets a flag and the work raises `Cancelled`
at its next `advance()`/`checkpoint()`, then cleans up as on any other error.

    with registry.run("snapshot_create", collection="c", total=size) as task:
        for chunk in ...:
            task.advance(len(chunk))   # raises Cancelled once DELETE /tasks/{id} was asked

A task started inside another one (an S3 upload inside a snapshot creation, a URL download
inside a recovery) is its child: cancelling the parent stops the child's work too. An HTTP
route that answers before the work ends (wait=false) registers the task first (`start`), so
its id can go into the answer, and runs the work under `bind(task)`: the first `run` of the
same kind inside claims that task instead of starting a child.

Work that passes a point of no return (recovery swapping the new collection in) calls
`irreversible()`: from then on the task refuses cancellation (`cancel()` answers False).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError

RUNNING, OK, FAILED, CANCELLED = "running", "ok", "failed", "cancelled"
KEEP_FINISHED = 200  # finished tasks kept for GET /tasks (the newest)
# Every kind of long operation (fixed, so per-kind metrics have bounded cardinality)
KINDS = ("snapshot_create", "snapshot_create_full", "snapshot_recover", "s3_upload",
         "s3_download", "url_download", "index_build", "device_rehydrate")
OUTCOMES = (OK, FAILED, CANCELLED)


class Cancelled(UserError):
    """The task was cancelled (DELETE /tasks/{id}); its work stops and cleans up."""

    prefix = "Cancelled: "


@dataclass
class Task:
    id: str
    kind: str
    collection: str | None
    unit: str = "bytes"  # or "rows"
    phase: str = "starting"
    done: int = 0
    total: int | None = None
    cancellable: bool = False
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    outcome: str = RUNNING
    error: str | None = None
    seq: int = 0  # creation order
    source: str | None = None  # what a recovery reads: file, url, upload, startup
    parent: Task | None = field(default=None, repr=False)
    claimed: bool = False  # a `run` adopted this (pre-registered) task
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- reporting (from the worker thread) -------------------------------------------

    def advance(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self.done += n
        self.checkpoint()

    def set_done(self, n: int) -> None:
        """Progress as an absolute figure; it never goes back."""
        with self._lock:
            self.done = max(self.done, n)
        self.checkpoint()

    def set_total(self, n: int | None) -> None:
        self.total = n

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.checkpoint()

    def checkpoint(self) -> None:
        """Raise Cancelled if cancellation was asked for (of this task or its parent)."""
        if self.cancel_requested:
            raise Cancelled(f"task {self.id} ({self.kind}) was cancelled")

    def irreversible(self, phase: str) -> None:
        """The point of no return: raise Cancelled if cancellation was asked for, else refuse
        it from now on (atomically with `cancel`, so no request slips in between)."""
        with self._lock:
            self.checkpoint()
            self.cancellable = False
            self.phase = phase

    # ---- control ----------------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the work to stop; False when it is not cancellable or already over."""
        with self._lock:
            if not self.cancellable or self.outcome != RUNNING:
                return False
            self._cancel.set()
            return True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set() or (self.parent is not None
                                         and self.parent.cancel_requested)

    def to_json(self) -> dict[str, Any]:
        now = self.finished_at or time.time()
        elapsed = max(now - self.started_at, 1e-9)
        rate = self.done / elapsed if self.done else 0.0
        eta = None
        if self.outcome == RUNNING and self.total and rate > 0:
            eta = max(self.total - self.done, 0) / rate
        return {
            "id": self.id, "kind": self.kind, "collection": self.collection,
            "phase": self.phase, "unit": self.unit,
            f"{self.unit}_done": self.done, f"{self.unit}_total": self.total,
            "progress": (min(self.done / self.total, 1.0) if self.total else None),
            "started_at": self.started_at, "finished_at": self.finished_at,
            "elapsed_s": elapsed, "rate_per_s": rate, "eta_s": eta,
            "outcome": self.outcome, "error": self.error, "cancellable": self.cancellable,
            "cancel_requested": self._cancel.is_set(), "source": self.source,
            "parent": self.parent.id if self.parent is not None else None,
        }


_current = threading.local()


def current() -> Task | None:
    """The task the calling thread works for, if any."""
    return getattr(_current, "task", None)


def advance(n: int) -> None:
    """Report progress to the current task (a no-op outside one)."""
    task = current()
    if task is not None:
        task.advance(n)


def set_phase(phase: str) -> None:
    """Name the current task's phase (a no-op outside one); a cancellation point too."""
    task = current()
    if task is not None:
        task.set_phase(phase)


def begin(phase: str, total: int | None) -> None:
    """The current task enters `phase`, whose progress counts up to `total`."""
    task = current()
    if task is not None:
        task.set_total(total)
        task.set_phase(phase)


def checkpoint() -> None:
    """Raise Cancelled if the current task (if any) was cancelled."""
    task = current()
    if task is not None:
        task.checkpoint()


class TaskRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._seq = itertools.count(1)
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()

    def start(self, kind: str, collection: str | None = None, total: int | None = None,
              unit: str = "bytes", cancellable: bool = False, source: str | None = None,
              parent: Task | None = None) -> Task:
        task = Task(uuid.uuid4().hex, kind, collection, unit=unit, total=total,
                    cancellable=cancellable, seq=next(self._seq), source=source,
                    parent=parent)
        with self._lock:
            self._tasks[task.id] = task
        return task

    def finish(self, task: Task, error: BaseException | None = None) -> None:
        with task._lock:  # noqa: SLF001 - atomic with cancel(): no request after the outcome
            if task.outcome != RUNNING:
                return
            task.finished_at = time.time()
            if error is None:
                task.outcome, task.phase = OK, "done"
                if task.total is not None and task.done < task.total:
                    task.done = task.total  # uncounted bytes: tar headers, padding
            elif isinstance(error, Cancelled):
                task.outcome, task.phase, task.error = CANCELLED, "cancelled", "cancelled"
            else:
                task.outcome, task.phase = FAILED, "failed"
                task.error = (getattr(error, "message", None) or str(error)
                              or type(error).__name__)
        with self._lock:
            self.outcomes[(task.kind, task.outcome)] += 1
            self._finished.append(task.id)
            while len(self._finished) > KEEP_FINISHED:
                self._tasks.pop(self._finished.popleft(), None)

    @contextmanager
    def run(self, kind: str, collection: str | None = None, total: int | None = None,
            unit: str = "bytes", cancellable: bool = False,
            task: Task | None = None, source: str | None = None) -> Iterator[Task]:
        """Register (or adopt a pre-registered `task`, or the thread's current task of this
        kind when nothing claimed it yet), make it the thread's current task, and record the
        outcome; the exception, if any, propagates."""
        previous = current()
        if task is None and previous is not None and previous.kind == kind \
                and not previous.claimed and previous.outcome == RUNNING:
            task = previous
        if task is None:
            task = self.start(kind, collection, total, unit, cancellable, source, previous)
        else:
            task.collection = collection or task.collection
            task.total = total if total is not None else task.total
            task.unit, task.source = unit, source or task.source
            with task._lock:  # noqa: SLF001
                task.cancellable = cancellable and task.outcome == RUNNING
        task.claimed = True
        _current.task = task
        try:
            task.checkpoint()  # cancelled while it waited to start: never starts
            yield task
        except BaseException as exc:
            self.finish(task, exc)
            raise
        else:
            self.finish(task)
        finally:
            _current.task = previous

    @contextmanager
    def bind(self, task: Task) -> Iterator[Task]:
        """Run work for a pre-registered `task` (see `start`): the first `run` of its kind
        inside claims it; if none does (the work failed before it began), it ends here."""
        previous = current()
        _current.task = task
        try:
            yield task
        except BaseException as exc:
            self.finish(task, exc)
            raise
        else:
            self.finish(task)
        finally:
            _current.task = previous

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def list(self, running_only: bool = False) -> list[Task]:
        with self._lock:
            tasks = sorted(self._tasks.values(), key=lambda t: t.seq)
        return [t for t in tasks if t.outcome == RUNNING] if running_only else tasks


# Process-wide, like the index builder: every long operation of this process reports here.
registry = TaskRegistry()
