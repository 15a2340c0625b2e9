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
`irreversible()`: from then on `checkpoint()` never raises for it, and cancelling it, a task
it started, or any task above it is refused (`cancel()` answers False) until it ends. All
of cancel, irreversible and finish take one lock (`_control`), so none slips in between.

Finished tasks stay listed for a while (per kind, so a flood of index builds never pushes a
snapshot's outcome out before its client polled it): the newest KEEP_FINISHED_PER_KIND of
each kind, and every one younger than KEEP_FINISHED_YOUNG_S, up to MAX_FINISHED in all.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Conflict

RUNNING, OK, FAILED, CANCELLED = "running", "ok", "failed", "cancelled"
# Finished tasks kept for GET /tasks: the newest KEEP_FINISHED_PER_KIND of each kind, and
# any younger than KEEP_FINISHED_YOUNG_S (so a wait=false client sees its outcome), unless
# more than MAX_FINISHED are kept in all (then the oldest go first, whatever their kind).
KEEP_FINISHED_PER_KIND = 100
KEEP_FINISHED_YOUNG_S = 600.0
MAX_FINISHED = 5000
# Every kind of long operation (fixed, so per-kind metrics have bounded cardinality)
KINDS = ("snapshot_create", "snapshot_create_full", "snapshot_recover", "s3_upload",
         "s3_download", "url_download", "index_build", "device_rehydrate", "quantize")
OUTCOMES = (OK, FAILED, CANCELLED)


class Cancelled(Conflict):
    """The task was cancelled (DELETE /tasks/{id}); its work stops and cleans up. A caller
    waiting on the operation gets 409 over REST (the operation conflicted with a cancel; not
    a client error to fix and resend as is) and CANCELLED over gRPC."""

    prefix = "Cancelled: "


# Cancel, irreversible and finish decide together across a family of tasks (a parent's
# cancel against a child's point of no return): one lock for all, taken only at those rare
# transitions (progress counting takes the task's own lock).
_control = threading.Lock()


@dataclass(eq=False)  # identity: a task equals only itself (and hashes cheaply)
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
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _no_return: bool = field(default=False, repr=False)  # past its point of no return
    _holds: int = field(default=0, repr=False)  # running descendants past theirs

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
        """Raise Cancelled if cancellation was asked for (of this task or its parent);
        never past the point of no return."""
        if self._no_return:
            return
        if self.cancel_requested:
            raise Cancelled(f"task {self.id} ({self.kind}) was cancelled")

    def irreversible(self, phase: str) -> None:
        """The point of no return: raise Cancelled if cancellation was asked for (of this
        task or one above it), else refuse it from now on, for this task and every task
        above it until this one ends (atomically with `cancel`: no request slips in)."""
        with _control:
            if not self._no_return:
                self.checkpoint()
                self._no_return = True
                for above in self._ancestors():
                    above._holds += 1  # noqa: SLF001
            self.cancellable = False
            self.phase = phase

    # ---- control ----------------------------------------------------------------------

    def try_cancel(self) -> str | None:
        """Ask the work to stop: None when asked, else why it is refused. Accepted means
        asked, not done: the work stops at its next progress report, and one that has none
        left ends with its own outcome ("ok"); the outcome is what counts."""
        with _control:
            reason = self._refusal()
            if reason is None:
                self._cancel.set()
            return reason

    def cancel(self) -> bool:
        """Ask the work to stop; False when refused (see `try_cancel`)."""
        return self.try_cancel() is None

    def _refusal(self) -> str | None:
        if self.outcome != RUNNING:
            return f"it is already over (outcome: {self.outcome})"
        if self._no_return:
            return (f"it is past its point of no return (phase: {self.phase}) and will "
                    f"finish")
        if self._holds:
            return ("a task it started is past its point of no return; it can be "
                    "cancelled once that one ends")
        if any(above._no_return for above in self._ancestors()):  # noqa: SLF001
            return "the task that started it is past its point of no return"
        if not self.cancellable:
            return f"{self.kind} has no cancellation point"
        return None

    def _ancestors(self) -> Iterator[Task]:
        above = self.parent
        while above is not None:
            yield above
            above = above.parent

    @property
    def over(self) -> bool:
        """It has its outcome."""
        return self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task is over (at most `timeout` seconds); True if it is."""
        return self._ended.wait(timeout)

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
    def __init__(self, keep_per_kind: int = KEEP_FINISHED_PER_KIND,
                 keep_young_s: float = KEEP_FINISHED_YOUNG_S, max_finished: int = MAX_FINISHED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        # finished tasks per kind, oldest first: (when it finished on `clock`, id)
        self._finished: dict[str, collections.deque[tuple[float, str]]] = {}
        self._n_finished = 0
        self.keep_per_kind, self.keep_young_s = keep_per_kind, keep_young_s
        self.max_finished, self._clock = max_finished, clock
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
        with _control:  # atomic with cancel(): no request after the outcome
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
            if task._no_return:  # noqa: SLF001 - over: the tasks above it may be cancelled
                for above in task._ancestors():  # noqa: SLF001
                    above._holds -= 1  # noqa: SLF001
            task._ended.set()  # noqa: SLF001
        with self._lock:
            self.outcomes[(task.kind, task.outcome)] += 1
            self._finished.setdefault(task.kind, collections.deque()).append(
                (self._clock(), task.id))
            self._n_finished += 1
            self._prune()

    def _prune(self) -> None:
        """Drop finished tasks past retention (see the module's docstring); under _lock."""
        now = self._clock()
        for queue in self._finished.values():
            while len(queue) > self.keep_per_kind and now - queue[0][0] >= self.keep_young_s:
                self._drop(queue)
        while self._n_finished > self.max_finished:
            self._drop(min((q for q in self._finished.values() if q), key=lambda q: q[0][0]))

    def _drop(self, queue: collections.deque[tuple[float, str]]) -> None:
        self._tasks.pop(queue.popleft()[1], None)
        self._n_finished -= 1

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
            with _control:
                task.cancellable = (cancellable and task.outcome == RUNNING
                                    and not task._no_return)  # noqa: SLF001
        task.claimed = True
        with self.bind(task):
            task.checkpoint()  # cancelled while it waited to start: never starts
            yield task

    @contextmanager
    def bind(self, task: Task) -> Iterator[Task]:
        """Run work for a pre-registered `task` (see `start`) as the thread's current task and
        record its outcome (the exception, if any, propagates). The first `run` of its kind
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
            self._prune()  # young tasks past the per-kind count age out without a finish
            tasks = sorted(self._tasks.values(), key=lambda t: t.seq)
        return [t for t in tasks if t.outcome == RUNNING] if running_only else tasks


# Process-wide, like the index builder: every long operation of this process reports here.
registry = TaskRegistry()
