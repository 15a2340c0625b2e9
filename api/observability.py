"""Observability: request ids, structured access logs and Prometheus metrics (`GET /metrics`).

- Every HTTP response carries `x-request-id`: the client's own (when it is a sane token of at
  most 128 characters) or a fresh one. The id is in the access-log line of the request, in its
  error line (status >= 500), and in every log record written while the request is served
  (`request_id=...` is appended by `RequestIdFilter`).
- Access lines are `key=value` pairs with JSON-quoted strings, on the `quiver.access` logger:
  `request_id=… method="PUT" route="/collections/{collection_name}/points" path="…"
  status=200 duration_ms=1.93 client="127.0.0.1"`. The query string is never logged (a key
  passed there must not end up in a log file). Lines reach the handlers in batches, at most
  ACCESS_FLUSH_S after their request (AccessLog); a 5xx line goes out at once, after the
  lines before it, and shutdown flushes the rest.
- `/metrics` is hand-written Prometheus text (exposition format 0.0.4): request counts and
  latency histograms by method, route template (never the raw path: bounded cardinality) and
  status; points, segments and WAL bytes per collection; snapshot creation durations and
  bytes; stored snapshots per collection; device memory (the default device's budget); HNSW index
  builds; process RSS and open file descriptors. `?anonymize=true` (Qdrant's parameter)
  replaces collection names by a hash. It sits behind the API keys like every other
  endpoint; it is a GET, so the read-only key may read it.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextvars import Context, ContextVar
from random import getrandbits
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http import VERSION_HEADER, normalize_path
from engine import ann
from gpu.device import default_device
from snapshots.manager import SnapshotManager
from snapshots.storage import LocalStorage

access_log = logging.getLogger("quiver.access")

REQUEST_ID: ContextVar[str | None] = ContextVar("quiver_request_id", default=None)
HEADER = b"x-request-id"
_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._:@+=/-]{1,128}$")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
UNMATCHED = "(unmatched)"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Loggers whose records get `request_id=…` appended while a request is being served.
REQUEST_LOGGERS = ("quiver", "quiver.http", "quiver.access", "quiver.collection",
                   "quiver.catalog", "quiver.wal", "quiver.snapshots")


def current_request_id() -> str | None:
    return REQUEST_ID.get()


_PLAIN = re.compile(r'[ !#-\[\]-~]*')  # printable ASCII without '"' and '\\': quoted as is


def _q(text: str) -> str:
    """A log value: JSON-quoted, so CR/LF or quotes in a path cannot forge a log line."""
    if _PLAIN.fullmatch(text):  # the common case, the same text json.dumps gives, 10x cheaper
        return '"' + text + '"'
    return json.dumps(text, ensure_ascii=True)


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` and appends `request_id=…` to records logged during a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" in record.__dict__:
            return True  # a batched access line carries its own request's id (AccessLog)
        rid = REQUEST_ID.get()
        record.request_id = rid or "-"
        if rid and record.name != access_log.name and not getattr(record, "_rid", False):
            record.msg = f"{record.getMessage()} request_id={rid}"
            record.args = None
            record._rid = True
        return True


def install_log_filter() -> None:
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RequestIdFilter) for f in logger.filters):
            logger.addFilter(RequestIdFilter())


# ---- metrics ------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[Any, ...], extra: str = "") -> str:
    parts = [f'{n}="{_esc(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


class Histogram:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.label_names, self.buckets = name, help_text, labels, buckets
        self.series: dict[tuple[Any, ...], list[float]] = {}  # counts per bucket, +Inf, sum

    def observe(self, labels: tuple[Any, ...], value: float) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [0] * (len(self.buckets) + 1) + [0.0]
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                s[i] += 1
                break
        else:
            s[len(self.buckets)] += 1
        s[-1] += value

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}")
        out.append(f"# TYPE {self.name} histogram")
        for labels, s in sorted(self.series.items()):
            cum: float = 0  # the counts are ints, so this stays an int (rendered `3`, not `3.0`)
            for i, bound in enumerate(self.buckets):
                cum += s[i]
                le = _labels(self.label_names, labels, 'le="' + repr(bound) + '"')
                out.append(f"{self.name}_bucket{le} {cum}")
            cum += s[len(self.buckets)]
            le = _labels(self.label_names, labels, 'le="+Inf"')
            plain = _labels(self.label_names, labels)
            out.append(f"{self.name}_bucket{le} {cum}")
            out.append(f"{self.name}_sum{plain} {_num(s[-1])}")
            out.append(f"{self.name}_count{plain} {cum}")


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.label_names = name, help_text, labels
        self.series: dict[tuple[Any, ...], float] = {}

    def inc(self, labels: tuple[Any, ...], by: float = 1) -> None:
        self.series[labels] = self.series.get(labels, 0) + by

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}")
        out.append(f"# TYPE {self.name} counter")
        for labels, v in sorted(self.series.items()):
            out.append(f"{self.name}{_labels(self.label_names, labels)} {_num(v)}")


def _gauge(out: list[str], name: str, help_text: str,
           rows: Sequence[tuple[tuple[str, ...], tuple[Any, ...], float]]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} gauge")
    for names, values, v in rows:
        out.append(f"{name}{_labels(names, values)} {_num(v)}")


class Metrics:
    """Process-wide counters. Request metrics are recorded on the event loop; snapshot metrics
    from worker threads; one lock covers both."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.time()
        self.requests = Counter("quiver_http_requests_total",
                                "HTTP requests by method, route template and status",
                                ("method", "route", "status"))
        self.latency = Histogram("quiver_http_request_duration_seconds",
                                 "HTTP request latency by method, route template and status",
                                 ("method", "route", "status"), LATENCY_BUCKETS)
        self.snap_duration = Histogram("quiver_snapshot_create_duration_seconds",
                                       "Snapshot creation time (kind: collection|full)",
                                       ("kind", "outcome"), SNAPSHOT_BUCKETS)
        self.snap_bytes = Counter("quiver_snapshot_created_bytes_total",
                                  "Bytes of snapshot archives created", ("kind",))
        self.snap_count = Counter("quiver_snapshot_creations_total",
                                  "Snapshot creations by kind and outcome", ("kind", "outcome"))
        self.rpcs = Counter("quiver_grpc_requests_total", "gRPC calls by method and status code",
                            ("method", "code"))
        self.rpc_latency = Histogram("quiver_grpc_request_duration_seconds",
                                     "gRPC call latency by method and status code",
                                     ("method", "code"), LATENCY_BUCKETS)
        # more gauges, rendered on every scrape: fn(out, label) appends exposition lines,
        # passing collection names through label() (anonymized on request); tasks and
        # snapshot schedules register theirs in api/app.py
        self.sources: list[Callable[[list[str], Callable[[str], str]], None]] = []

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        with self.lock:
            self.requests.inc(key)
            self.latency.observe(key, seconds)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        with self.lock:
            self.rpcs.inc(key)
            self.rpc_latency.observe(key, seconds)

    def add_source(self, source: Callable[[list[str], Callable[[str], str]], None]) -> None:
        self.sources.append(source)

    def observe_snapshot(self, kind: str, outcome: str, seconds: float, size: int) -> None:
        """A snapshots.manager.SnapshotListener: one creation ended."""
        with self.lock:
            self.snap_duration.observe((kind, outcome), seconds)
            self.snap_count.inc((kind, outcome))
            if outcome == "ok":
                self.snap_bytes.inc((kind,), size)

    def render(self, catalog: Any, snapshots: Any, anonymize: bool = False) -> str:
        out: list[str] = []
        with self.lock:
            self.requests.render(out)
            self.latency.render(out)
            self.snap_duration.render(out)
            self.snap_count.render(out)
            self.snap_bytes.render(out)
            self.rpcs.render(out)
            self.rpc_latency.render(out)
        _collection_metrics(out, catalog, snapshots, anonymize)
        label = _anon if anonymize else str
        for source in self.sources:
            source(out, label)
        _device_metrics(out)
        _process_metrics(out, self.started)
        return "\n".join(out) + "\n"


def _anon(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def _collection_metrics(out: list[str], catalog: Any, snapshots: Any, anonymize: bool) -> None:
    points, segments, indexed, wal_bytes, unflushed, on_device = [], [], [], [], [], []
    snap_n, snap_b = [], []
    c = ("collection",)
    local = isinstance(getattr(snapshots, "store", None), LocalStorage)
    for real, coll in sorted(dict(catalog.collections).items()):
        name = _anon(real) if anonymize else real
        try:
            points.append((c, (name,), coll.points_count()))
            segments.append((c, (name,), len(coll.segments)))
            indexed.append((c, (name,), coll.indexed_vectors()))
            wal_bytes.append((c, (name,), coll.wal.bytes_since_rotate))
            unflushed.append((c, (name,), max(0, coll.wal.last_seq - coll.flushed_seq)))
            on_device.append((c, (name,), coll.device_info().get("segments_on_device", 0)))
            if local:
                listed = snapshots.store.list(real)
                snap_n.append((c, (name,), len(listed)))
                snap_b.append((c, (name,), sum(s.size for s in listed)))
        except Exception:  # noqa: BLE001 - a collection being swapped must not break a scrape
            continue
    _gauge(out, "quiver_collections", "Loaded collections", [((), (), len(points))])
    _gauge(out, "quiver_collections_failed", "Collections that failed to load",
           [((), (), len(getattr(catalog, "broken", {})))])
    _gauge(out, "quiver_collection_points", "Live points per collection", points)
    _gauge(out, "quiver_collection_segments", "Segments per collection", segments)
    _gauge(out, "quiver_collection_segments_on_device",
           "Segments whose vectors are in device memory", on_device)
    _gauge(out, "quiver_collection_indexed_vectors", "Vectors covered by HNSW indexes", indexed)
    _gauge(out, "quiver_collection_wal_bytes", "Write-ahead log bytes not yet flushed away",
           wal_bytes)
    _gauge(out, "quiver_collection_unflushed_operations",
           "Acknowledged operations only in the WAL (not yet in flushed segments)", unflushed)
    if local:
        _gauge(out, "quiver_snapshots_stored", "Snapshots stored per collection", snap_n)
        _gauge(out, "quiver_snapshots_stored_bytes", "Bytes of stored snapshots per collection",
               snap_b)


def _device_metrics(out: list[str]) -> None:
    stats = default_device().budget.stats()
    limit = stats.get("limit_bytes")
    _gauge(out, "quiver_device_memory_used_bytes", "Device memory held by segments",
           [((), (), stats.get("used_bytes") or 0)])
    _gauge(out, "quiver_device_memory_limit_bytes",
           "Device memory segments may hold (0: no device)",
           [((), (), limit or 0)])
    _gauge(out, "quiver_device_resident_segments", "Segments resident in device memory",
           [((), (), stats.get("resident_segments") or 0)])
    out.append("# HELP quiver_index_builds_total HNSW index builds and extensions in this process")
    out.append("# TYPE quiver_index_builds_total counter")
    out.append(f"quiver_index_builds_total {ann.builds()}")


def _process_metrics(out: list[str], started: float) -> None:
    rss = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    _gauge(out, "process_resident_memory_bytes", "Resident set size", [((), (), rss)])
    _gauge(out, "process_open_fds", "Open file descriptors", [((), (), fds)])
    _gauge(out, "process_start_time_seconds", "Start time (Unix seconds)", [((), (), started)])


def instrument_snapshots(manager: SnapshotManager, metrics: Metrics) -> None:
    """Time every snapshot creation (including wait=false ones): the manager's listener."""
    manager.add_listener(metrics.observe_snapshot)


async def metrics_endpoint(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool  # noqa: PLC0415

    state = request.app.state
    anonymize = request.query_params.get("anonymize", "false").lower() in ("true", "1")
    text = await run_in_threadpool(state.metrics.render, state.catalog, state.snapshots,
                                   anonymize)
    return Response(text, media_type=CONTENT_TYPE)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]


# ---- the middleware ------------------------------------------------------------------------


def route_template(app: Any, scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # refused before routing (401/403/413): find the route it would have reached
    router = getattr(app, "router", None)
    for r in getattr(router, "routes", ()):
        try:
            match, _ = r.matches(scope)
        except Exception:  # noqa: BLE001
            continue
        if match != Match.NONE and isinstance(getattr(r, "path", None), str):
            return r.path
    return UNMATCHED


class RequestContext:
    """The front layer of every HTTP request (api/app.py): Qdrant's path normalisation, the
    request id, `x-quiver-version`, the access log and request metrics, in one pure ASGI
    layer with one send wrapper (each layer costs a coroutine and a wrapper per message).
    Outside the auth and body-limit layers: their refusals are counted, logged and carry the
    id too; route templates match the normalised path."""

    def __init__(self, app: ASGIApp, metrics: Metrics, router_app: Any,
                 access: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.router_app = router_app
        self.access = access
        self.access_log = AccessLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = normalize_path(scope)
        rid = None
        for k, v in scope.get("headers", ()):
            if k == HEADER:
                if _CLIENT_ID.fullmatch(v):
                    rid = v.decode()
                break
        if rid is None:
            # uuid4().hex's shape without its getrandom syscall: an id, not a secret
            rid = f"{getrandbits(128):032x}"
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 500
        error_body = bytearray()
        stamp = ((HEADER, rid.encode()), VERSION_HEADER)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                for k, _ in headers:
                    if k == HEADER:  # ours replaces the app's
                        headers = [h for h in headers if h[0] != HEADER]
                        break
                headers += stamp
                message = dict(message, headers=headers)
            elif message["type"] == "http.response.body" and status >= 500 \
                    and len(error_body) < 2048:
                error_body.extend(message.get("body", b"")[: 2048 - len(error_body)])
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method", "")
            route = route_template(self.router_app, scope)
            self.metrics.observe_request(method, route, status, elapsed)
            self._log(scope, rid, method, route, status, elapsed, bytes(error_body))
            REQUEST_ID.reset(token)

    def _log(self, scope: Scope, rid: str, method: str, route: str, status: int,
             elapsed: float, body: bytes) -> None:
        if status < 500:
            if self.access and access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                self.access_log.add((time.time(), rid, method, route, scope.get("path", ""),
                                     status, elapsed, client[0] if client else ""))
            return  # else nothing is emitted: the line is not even formatted
        self.access_log.flush()  # the lines before it come first
        message = ""
        try:
            parsed = json.loads(body) if body else None
            if isinstance(parsed, dict) and isinstance(parsed.get("status"), dict):
                message = str(parsed["status"].get("error", ""))
        except ValueError:
            message = body[:300].decode("utf-8", "replace")
        client = scope.get("client")
        line = _access_line(rid, method, route, scope.get("path", ""), status, elapsed,
                            client[0] if client else "")
        access_log.error("%s error=%s", line, _q(message))


def _access_line(rid: str, method: str, route: str, path: str, status: int, elapsed: float,
                 client: str) -> str:
    return (f"request_id={rid} method={_q(method)} route={_q(route)} path={_q(path)} "
            f"status={status} duration_ms={elapsed * 1000:.2f} client={_q(client)}")


# The access lines of successful requests reach the logging handlers in batches, on the event
# loop, at most ACCESS_FLUSH_S after their request. Written one by one, each cost ~25 us
# after the response was sent (a LogRecord with its getpid syscall, the formatter, a write
# syscall): a third of a small query's server time, and the next request on a keep-alive
# connection waited for it (bench/overhead.py, py-spy). A batch is formatted back to back
# (hot caches) in slices of ACCESS_SLICE lines, so a burst never holds the loop for long.
ACCESS_FLUSH_S = 0.05
ACCESS_SLICE = 4
_Entry = tuple[float, str, str, str, str, int, float, str]


class AccessLog:
    """Pending access lines: `add` (on the request's path: one append), drained by a timer
    on the running loop; `flush` (before a 5xx line, at shutdown, when the loop that held the
    timer went away) emits them at once. A line keeps its request's time and id: batching
    changes when it is written, not what. A kill -9 loses at most the last ACCESS_FLUSH_S of
    lines (as nginx's buffered access_log); error lines are never deferred."""

    def __init__(self) -> None:
        _ACCESS_LOGS.add(self)
        self.pending: list[_Entry] = []
        self.lock = threading.Lock()  # loops of several threads (tests' portals) may add
        self.timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, entry: _Entry) -> None:
        with self.lock:
            self.pending.append(entry)
            if self.timer is not None and self.loop is not None and self.loop.is_running():
                return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to drain on: now
            self.flush()
            return
        stale = False
        with self.lock:
            if self.timer is None or self.loop is not loop:
                stale = self.timer is not None  # its loop stopped before the timer fired
                if self.timer is not None:
                    self.timer.cancel()
                self.loop = loop
                # an empty context: the drain must not see this request's id (REQUEST_ID)
                self.timer = loop.call_later(ACCESS_FLUSH_S, self._drain, context=Context())
        if stale:
            self._emit_now()

    def _drain(self) -> None:
        with self.lock:
            batch, self.pending = self.pending[:ACCESS_SLICE], self.pending[ACCESS_SLICE:]
            self.timer = None
            if self.pending and self.loop is not None:
                self.timer = self.loop.call_soon(self._drain)  # the rest after other work
        _emit(batch)

    def _emit_now(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        _emit(batch)

    def flush(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        self._emit_now()


_ACCESS_LOGS: weakref.WeakSet[AccessLog] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """The last resort (a loop that stopped with lines pending and no shutdown to flush)."""
    for log in list(_ACCESS_LOGS):
        log.flush()


def _emit(batch: list[_Entry]) -> None:
    for created, rid, method, route, path, status, elapsed, client in batch:
        # Logger.info() minus findCaller's stack walk: the record goes through the same
        # filters and handlers, dated when its request ended
        rec = access_log.makeRecord(access_log.name, logging.INFO, __file__, 0,
                                    _access_line(rid, method, route, path, status, elapsed,
                                                 client), (), None, "_log")
        rec.created = created
        rec.msecs = int((created - int(created)) * 1000) + 0.0
        rec.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        rec.request_id = rid
        access_log.handle(rec)
