"""HTTP plumbing shared by the routers: the endpoint wrapper, body parsing, the path
normaliser, the body limit and the direct route dispatcher of the ASGI front (api/app.py)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, from_exception, ok
from api.parse.common import state_dict
from engine import QUIVER_VERSION
from engine.errors import BadRequest, EngineError, ServiceError
from engine.view import INLINE, WouldBlock

log = logging.getLogger("quiver.http")
QDRANT_API_VERSION = "1.19.0"
VERSION_HEADER = (b"x-quiver-version", QUIVER_VERSION.encode())

Handler = Callable[[Request, Any], Any]


def parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Format error in JSON body: {exc}") from None


async def read_body(request: Request) -> bytes:
    """`await request.body()` (the same bytes, cached on the request as it caches them, so
    a later body() or stream() sees them) without its async generator and aclosing wrapper:
    their set-up was a tenth of a small query's front (cProfile, bench/overhead.py)."""
    if hasattr(request, "_body"):
        return request._body
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            request._is_disconnected = True
            raise ClientDisconnect()
    request._stream_consumed = True
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body
    return body


_read_body = read_body  # endpoint()'s flag of the same name shadows it
# the query parameters of a request without any, shared (immutable): parsing b"" each time
# was a few per cent of a small query (strict mode reads `timeout`, cProfile)
_NO_QUERY = QueryParams(b"")


# ---- where a handler runs ----------------------------------------------------------------------

# A sync handler normally runs in the thread pool, so the event loop keeps serving while it
# works. The hop costs ~0.3 ms (two thread wake-ups and the GIL hand-over: measured with
# py-spy, bench/overhead.py), more than a read of a small collection itself takes. Reads
# marked `inline` therefore run on the loop while they are cheap: each (route, collection)
# keeps a decaying maximum of its handler's recent durations, and a read runs inline only when
# that is under INLINE_BUDGET_S, no other handler is in the pool (a write holding the
# collection's lock would stall the loop), the collection's write lock is free at that instant
# and none of its segments is on the device (its searches coalesce across threads). A writer
# the gate cannot see (gRPC, the indexer, the flusher) may still take the lock before the read
# takes its view: inline, the view never waits (engine.view.INLINE) and the read reruns in the
# pool.
INLINE_BUDGET_S = 0.001
# after one 10 ms read (or a preempted one: durations are wall time), ~4 reads go to the pool
INLINE_DECAY = 0.5
_MAX_KEYS = 4096
_pool_busy = 0  # handlers of endpoint() running in the thread pool now (loop thread only)


class InlineGate:
    """The decaying cost of one route's handler per collection (see INLINE_BUDGET_S)."""

    def __init__(self) -> None:
        self.cost: dict[str, float] = {}

    def note(self, key: str, seconds: float) -> None:
        old = self.cost.get(key)
        if old is None and len(self.cost) >= _MAX_KEYS:
            self.cost.clear()  # collection names are unbounded; costs are cheap to relearn
        self.cost[key] = seconds if old is None else max(seconds, old * INLINE_DECAY)

    def allows(self, request: Request) -> str | None:
        """The key to note the run under when it may run inline now, else None."""
        scope = request.scope
        key = scope["path_params"].get("collection_name", "")
        cost = self.cost.get(key)
        if cost is None or cost > INLINE_BUDGET_S or _pool_busy:
            return None
        state = state_dict(scope["app"])
        if state.get("cluster") is not None:
            return None  # cluster mode: the handler may call other nodes
        try:
            coll = state["catalog"].get(key)
        except Exception:  # noqa: BLE001 - missing or broken: the pool run reports it
            return None
        lock = coll.write_lock
        if not lock.acquire(blocking=False):
            return None
        lock.release()
        for seg in coll.segments:  # no generator: this runs on every cheap read
            if seg.on_device:
                return None
        return key


def _timed(fn: Handler, request: Request, body: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(request, body)
    return result, time.perf_counter() - started


def _inline(fn: Handler, request: Request, body: Any, gate: InlineGate, key: str) -> Any:
    """Run fn on the loop and note its cost, never waiting for a collection's write lock (the
    gate saw it free, but a writer it cannot see may take it meanwhile): _NOT_RUN when the read
    would have waited. Nothing happened before the view was refused, so the caller reruns it
    in the pool. fn is the plain handler: the gate never lets a cluster-mode read run here."""
    token = INLINE.set(True)
    try:
        started = time.perf_counter()
        result = fn(request, body)
        gate.note(key, time.perf_counter() - started)
        return result
    except WouldBlock:
        return _NOT_RUN
    finally:
        INLINE.reset(token)


_NOT_RUN = object()


def clustered(fn: Handler) -> Handler:
    """Cluster mode: `app.state.cluster` (api/cluster/router.py) answers for its collections.
    Both transports run this (REST below, gRPC through `run.handler`)."""
    def handler(request: Request, body: Any) -> Any:
        router = getattr(request.app.state, "cluster", None)
        return fn(request, body) if router is None else router.handle(fn, request, body)
    handler.__wrapped__ = fn  # type: ignore[attr-defined]
    return handler


def endpoint(fn: Handler, read_body: bool = True,
             inline: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a sync handler fn(request, body) → result: the body is read on the event loop,
    the work runs in the thread pool (`inline` reads: on the loop while cheap, see
    INLINE_BUDGET_S), and the result goes into Qdrant's envelope. Every exception becomes an
    envelope, so the front dispatches these routes directly (`run.direct`)."""
    plain, fn = fn, clustered(fn)
    gate = InlineGate() if inline else None

    async def run(request: Request) -> Response:
        global _pool_busy
        started = time.perf_counter()
        if not request.scope.get("query_string"):
            request._query_params = _NO_QUERY  # what request.query_params would parse
        try:
            body = parse_json(await _read_body(request)) if read_body else None
            result = _NOT_RUN
            if gate is not None and (key := gate.allows(request)) is not None:
                result = _inline(plain, request, body, gate, key)
            if result is _NOT_RUN:  # the pool: not inline, or the inline run would have waited
                _pool_busy += 1
                try:
                    if gate is None:
                        result = await run_in_threadpool(fn, request, body)
                    else:
                        result, took = await run_in_threadpool(_timed, fn, request, body)
                        gate.note(request.scope["path_params"].get("collection_name", ""), took)
                finally:
                    _pool_busy -= 1
        except EngineError as exc:
            return from_exception(exc, started)
        except Exception:  # noqa: BLE001 - the envelope, never a bare traceback page
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            return from_exception(ServiceError("unexpected server error"), started)
        if isinstance(result, Response):
            return result
        return ok(result, started)

    # the gRPC transport calls the same handler (api/rpc/dispatch.py)
    run.handler = fn  # type: ignore[attr-defined]
    run.read_body = read_body  # type: ignore[attr-defined]
    run.direct = True  # type: ignore[attr-defined]
    return run


def direct(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Mark an async route function that never raises as safe for direct dispatch."""
    fn.direct = True  # type: ignore[attr-defined]
    return fn


def body_dict(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


# ---- the front's pieces -------------------------------------------------------------------------

_SLASHES = re.compile(r"/{2,}")


def normalize_path(scope: Scope) -> Scope:
    """Qdrant's NormalizePath::trim(): merge repeated slashes, strip the trailing slash."""
    path = scope["path"]
    if "//" in path or (len(path) > 1 and path.endswith("/")):
        path = _SLASHES.sub("/", path)
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        scope = dict(scope, path=path, raw_path=path.encode())
    return scope


class BodyLimit:
    """Refuse request bodies over the limit with 413, before and while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].endswith(self.exempt):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit():
                if int(v) > limit:
                    await _too_large(scope, receive, send, limit)
                    return
                # the server delivers no more than the declared length (h11, httptools)
                await self.app(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(scope, receive, send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    resp = from_exception(PayloadTooLarge(f"request body exceeds the limit of {limit} bytes "
                                          "(service.max_request_size_mb)"))
    await resp(scope, receive, send)


class Dispatch:
    """Routes a request straight to its endpoint when the router's first full match is a
    plain Route marked `direct` (every endpoint() route, the probes): no Starlette/FastAPI
    middleware layers and no linear scan of ~100 route patterns per request (the lookup is
    cached per method and path). Anything else — no match, 405, other endpoints, a route
    whose path patterns changed — goes to `fallback`, the app's full stack, unchanged."""

    MAX_CACHED = 4096

    def __init__(self, routes: list[Any], fallback: ASGIApp) -> None:
        self.routes = routes  # the router's own list: routes added later are seen
        self.fallback = fallback
        self.cache: dict[tuple[str, str], tuple[Route, dict[str, Any]] | None] = {}

    def _match(self, scope: Scope) -> tuple[Route, dict[str, Any]] | None:
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                if type(route) is Route and getattr(route.endpoint, "direct", False):
                    return route, child["path_params"]
                return None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("root_path"):
            await self.fallback(scope, receive, send)
            return
        key = (scope["method"], scope["path"])
        try:
            hit = self.cache[key]
        except KeyError:
            hit = self._match(scope)
            if len(self.cache) >= self.MAX_CACHED:
                self.cache.clear()
            self.cache[key] = hit
        if hit is None:
            await self.fallback(scope, receive, send)
            return
        route, params = hit
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = dict(params)
        response = await route.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)
