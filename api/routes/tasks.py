"""Quiver's own task endpoints (extensions, not in Qdrant's API): GET /tasks, GET /tasks/{id},
DELETE /tasks/{id} (cancel), and the tasks' Prometheus gauges.

A task is one long operation (engine.tasks): snapshot creation and recovery, transfers to and
from S3 or URLs, HNSW builds, device rehydration. Answers use Qdrant's envelope. Access: GET
is a global read and DELETE needs manage access (api.auth.need_of classifies them so, and
Access.refusal refuses both to a JWT scoped to collections: such a token never gets here).

Cancelled work ends with outcome "cancelled". A request that was waiting for it (a snapshot
create or recover with wait=true) answers 409 "Cancelled: task ... was cancelled" over REST
(engine.tasks.Cancelled is a Conflict: the operation met a cancel) and CANCELLED over gRPC
(api/rpc/status.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import from_exception, ok
from api.http import endpoint
from api.parse.common import query_flag
from engine import tasks
from engine.errors import BadRequest, Conflict, EngineError, NotFound, ServiceError

log = logging.getLogger(__name__)


def _esc(value: str) -> str:
    """A Prometheus label value."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


TELEMETRY_FINISHED = 20  # finished tasks /telemetry lists besides the running ones
MAX_WAIT_S = 300.0
# DELETE ?wait=true polls the task on the event loop, backing off from the first to the
# last interval: a waiter holds no worker thread, and costs at most 1/POLL_MAX_S wakeups a
# second once backed off.
POLL_FIRST_S, POLL_MAX_S = 0.01, 0.2


def _task(request: Request) -> tasks.Task:
    task_id = request.path_params["task_id"]
    task = tasks.registry.get(task_id)
    if task is None:
        raise NotFound(f"Task {task_id} not found")
    return task


def list_tasks(request: Request, body: Any) -> list[dict[str, Any]]:
    """Every task this process keeps (running ones and the newest finished), oldest first.
    Filters: `kind`, `collection`, `running=true`."""
    q = request.query_params
    running = query_flag(request, "running", False, strict=True)
    out = []
    for task in tasks.registry.list(running_only=running):
        if q.get("kind") not in (None, task.kind):
            continue
        if q.get("collection") not in (None, task.collection):
            continue
        out.append(task.to_json())
    return out


def get_task(request: Request, body: Any) -> dict[str, Any]:
    return _task(request).to_json()


def _wait_s(request: Request) -> float:
    raw = request.query_params.get("timeout")
    if raw is None:
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"timeout must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= MAX_WAIT_S:
        raise BadRequest(f"timeout must be between 0 and {MAX_WAIT_S:g} seconds")
    return value


def _cancel(request: Request) -> tuple[tasks.Task, float | None]:
    """Ask for the cancellation (409 when refused); the task and how long to wait for it."""
    task = _task(request)
    wait = query_flag(request, "wait", False, strict=True)
    timeout = _wait_s(request)
    refusal = task.try_cancel()
    if refusal is not None:
        raise Conflict(f"task {task.id} ({task.kind}) cannot be cancelled: {refusal}")
    return task, (timeout if wait else None)


def _answer(task: tasks.Task) -> dict[str, Any]:
    """The task's state, and `cancel`: what became of the request. "requested": still
    running (it stops at its next progress report); "done": it ended cancelled; "too_late":
    it ended with another outcome (it had no progress report left, or failed first)."""
    doc = task.to_json()
    outcome = doc["outcome"]
    doc["cancel"] = ("requested" if outcome == tasks.RUNNING
                     else "done" if outcome == tasks.CANCELLED else "too_late")
    return doc


async def cancel_task(request: Request) -> Response:
    """DELETE /tasks/{id}: ask a running task to stop. Its work stops at its next progress
    report and cleans up (a snapshot being created leaves no file; a recovery leaves the
    collection as it was). 200 means the stop was asked for, not that it happened: the
    task's `outcome` is what counts, and the answer's `cancel` field says it plainly
    ("requested", "done", or "too_late" when the work ended "ok"/"failed" anyway).
    `wait=true` waits (at most `timeout` seconds, default 30) for the task to end and answers
    with its final state. 409 when it is over, or refuses (an index build; a recovery past
    its point of no return, the swap; a task whose child, or parent, is past its own).

    Async, unlike the other routes: the wait is an asyncio sleep loop on the event loop, so
    any number of waiters hold no thread of the shared worker pool (a thread per waiter, for
    up to MAX_WAIT_S, would starve every other route). Polling the task's `over` flag keeps
    the engine free of asyncio: no callback from a worker thread into a loop that may be
    gone by then. The rest (a dict lookup, a flag under a brief lock) does not block."""
    started = time.perf_counter()
    try:
        task, timeout = _cancel(request)
        if timeout is not None:
            deadline, pause = time.monotonic() + timeout, POLL_FIRST_S
            while not task.over and (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 1.5, POLL_MAX_S)
        return ok(_answer(task), started)
    except EngineError as exc:
        return from_exception(exc, started)
    except Exception:  # noqa: BLE001 - the envelope, as endpoint() answers
        log.exception("unhandled error in DELETE %s", request.url.path)
        return from_exception(ServiceError("unexpected server error"), started)


def telemetry_tasks() -> list[dict[str, Any]]:
    """/telemetry's `quiver.tasks`: the running tasks and the newest finished ones."""
    all_tasks = tasks.registry.list()
    finished = [t.id for t in all_tasks if t.outcome != tasks.RUNNING]
    older = set(finished[:-TELEMETRY_FINISHED])  # by id: Task == is identity, a set is O(1)
    return [t.to_json() for t in all_tasks if t.id not in older]


def _gauge(out: list[str], name: str, help_text: str, kind: str = "gauge") -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def render_metrics(out: list[str], label: Callable[[str], str] = str) -> None:
    """Append the tasks' gauges to a /metrics exposition. Per-kind series cover the fixed set
    of kinds; per-task series cover running tasks only (bounded cardinality)."""
    all_tasks = tasks.registry.list()
    running = [t for t in all_tasks if t.outcome == tasks.RUNNING]
    kinds = list(tasks.KINDS) + sorted({t.kind for t in all_tasks} - set(tasks.KINDS))
    _gauge(out, "quiver_tasks_running", "Long operations running now, per kind")
    for kind in kinds:
        n = sum(1 for t in running if t.kind == kind)
        out.append(f'quiver_tasks_running{{kind="{_esc(kind)}"}} {n}')
    _gauge(out, "quiver_tasks_finished_total", "Long operations finished, per kind and outcome",
           "counter")
    counts = dict(tasks.registry.outcomes)
    for kind in kinds:
        for outcome in tasks.OUTCOMES:
            n = counts.get((kind, outcome), 0)
            out.append(f'quiver_tasks_finished_total{{kind="{_esc(kind)}",'
                       f'outcome="{outcome}"}} {n}')
    series: dict[str, list[str]] = {}
    helps = {
        "quiver_task_progress_ratio": "A running task's progress, 0..1 (when its total is known)",
        "quiver_task_bytes_done": "Bytes a running task has processed",
        "quiver_task_bytes_total": "Bytes a running task will process (when known)",
        "quiver_task_rows_done": "Rows a running task has processed",
        "quiver_task_rows_total": "Rows a running task will process (when known)",
        "quiver_task_rate_per_second": "A running task's average rate, in its unit per second",
        "quiver_task_eta_seconds": "A running task's estimated time left",
        "quiver_task_elapsed_seconds": "How long a running task has been running",
    }
    for task in running:
        doc = task.to_json()
        labels = (f'{{id="{task.id}",kind="{_esc(task.kind)}",'
                  f'collection="{_esc(label(task.collection) if task.collection else "")}"}}')
        values = {
            "quiver_task_progress_ratio": doc["progress"],
            f"quiver_task_{task.unit}_done": doc[f"{task.unit}_done"],
            f"quiver_task_{task.unit}_total": doc[f"{task.unit}_total"],
            "quiver_task_rate_per_second": doc["rate_per_s"],
            "quiver_task_eta_seconds": doc["eta_s"],
            "quiver_task_elapsed_seconds": doc["elapsed_s"],
        }
        for name, value in values.items():
            if value is not None and name in helps:
                series.setdefault(name, []).append(f"{name}{labels} {value}")
    for name, help_text in helps.items():
        if name in series:
            _gauge(out, name, help_text)
            out.extend(series[name])


routes: list[Route] = [
    Route("/tasks", endpoint(list_tasks, read_body=False), methods=["GET"]),
    Route("/tasks/{task_id}", endpoint(get_task, read_body=False), methods=["GET"]),
    Route("/tasks/{task_id}", cancel_task, methods=["DELETE"]),
]
