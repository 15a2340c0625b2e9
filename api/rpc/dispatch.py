"""One service layer, two transports: an RPC runs the very handler its REST route runs.

Each RPC is translated into the REST call it stands for — a method, a route template, path
parameters, query parameters and a JSON-shaped body — and `Bridge.call` then does what the HTTP
stack does for that route: the same API-key/JWT decision (`api.auth.need_of` on the concrete
path), the same handler from the routes table (`endpoint(fn).handler`), in the same thread
pool, and engine errors become gRPC status codes (api/rpc/status.py) with Qdrant's messages.
No query, write or snapshot logic lives in api/rpc.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NoReturn

import grpc
from starlette.concurrency import run_in_threadpool

from api.auth import (
    Access,
    Authenticator,
    Need,
    TokenRefused,
    keys_from_settings,
    need_of,
    presented_key,
    value_exists,
)
from api.qdrant_paths import not_served
from api.rpc.status import code_of, code_of_http
from engine.errors import BadRequest, EngineError

log = logging.getLogger("quiver.grpc")

Handler = Callable[[Any, Any], Any]


class RpcRequest:
    """The parts of a Starlette Request that route handlers read, filled from an RPC."""

    __slots__ = ("app", "method", "path_params", "query_params", "state", "headers", "url")

    def __init__(self, app: Any, method: str, path: str, path_params: dict[str, str],
                 query_params: dict[str, str], access: Access | None) -> None:
        self.app = app
        self.method = method
        self.path_params = path_params
        self.query_params = query_params
        self.state = SimpleNamespace(access=access) if access is not None \
            else SimpleNamespace()
        self.headers: dict[str, str] = {}
        self.url = SimpleNamespace(path=path)


def _handlers(routes: list[Any]) -> dict[tuple[str, str], Handler]:
    """(method, route template) → the sync handler behind every `endpoint()` route."""
    out: dict[tuple[str, str], Handler] = {}
    for route in routes:
        handler = getattr(route.endpoint, "handler", None)
        if handler is None:
            continue
        for method in route.methods or ():
            out.setdefault((method, route.path), handler)
    return out


def metadata_headers(metadata: Any) -> list[tuple[bytes, bytes]]:
    """gRPC metadata as the (name, value) byte pairs api.auth reads from HTTP headers
    (names are lowercase in both)."""
    return [(k.encode(), v if isinstance(v, bytes) else v.encode())
            for k, v in metadata or ()]


class Bridge:
    """Runs RPCs through the REST handlers of one app (one catalog, one snapshot manager)."""

    def __init__(self, app: Any, routes: list[Any]) -> None:
        self.app = app
        self.handlers = _handlers(routes)
        settings = app.state.settings
        api_key, read_only = keys_from_settings(settings.service)
        self.auth = Authenticator(api_key, read_only, bool(settings.service.jwt_rbac)) \
            if (api_key or read_only) else None
        self.metrics = getattr(app.state, "metrics", None)
        self._lock = threading.Lock()
        self.running = 0  # handlers in worker threads now

    def handler(self, method: str, template: str) -> Handler:
        try:
            return self.handlers[(method, template)]
        except KeyError:
            raise LookupError(f"no REST route {method} {template}") from None

    def authorize(self, metadata: Any, method: str,
                  path: str) -> tuple[Access | None, Any, str | None]:
        """The caller's Access for this call (None: no keys configured), the value_exists
        check its token asks for, and the refusal of this route (None: allowed); raises
        TokenRefused for a missing or unusable key. REST's order: the stateful check runs
        before the route's refusal (Bridge.call does both in the worker thread)."""
        if self.auth is None:
            return None, None, None
        access, check = self.auth.access(presented_key(metadata_headers(metadata)))
        need, name = need_of(method, path)
        message = access.refusal(need, name)
        return access, check, (f"Forbidden: {message}" if message is not None else None)

    def observe(self, rpc: str, code: grpc.StatusCode, started: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_rpc(rpc, code.name, time.perf_counter() - started)

    async def drain(self, timeout: float) -> bool:
        """Wait until no handler runs in a worker thread any more (after the server stopped
        taking calls, before the catalog closes); False if some still ran at the deadline."""
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() >= deadline:
                log.warning("%d gRPC handler(s) still running at shutdown", self.running)
                return False
            await asyncio.sleep(0.05)
        return True

    async def call(self, context: grpc.aio.ServicerContext, rpc: str, method: str,
                   template: str, path_params: dict[str, str] | None = None,
                   query: dict[str, str] | None = None, body: Any = None,
                   observe: bool = True) -> Any:
        """Run the REST route `method template` for an RPC and return its handler's result
        (the JSON-shaped value REST would put under "result"). Refusals and engine errors
        abort the RPC with Qdrant's status code and message. `observe`: count the call in
        the metrics (False for a first try that the caller may repeat)."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            params = path_params or {}
            try:
                path = _path(template, params)
            except BadRequest as exc:
                code = code_of(exc)
                await context.abort(code, exc.message)
            try:
                access, check, refusal = self.authorize(context.invocation_metadata(), method,
                                                        path)
            except TokenRefused as exc:
                code = code_of_http(exc.status)
                await context.abort(code, exc.message)
            handler = self.handler(method, template)
            req = RpcRequest(self.app, method, path, params, query or {}, access)

            def run() -> Any:
                with self._lock:
                    self.running += 1
                try:
                    if check is not None:
                        value_exists(self.app.state.catalog, check)
                    if refusal is not None:
                        raise TokenRefused(403, refusal)
                    return handler(req, body)
                finally:
                    with self._lock:
                        self.running -= 1

            try:
                result = await run_in_threadpool(run)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the client went away (or shutdown)
                raise
            except TokenRefused as exc:
                code = code_of_http(exc.status)
                await context.abort(code, exc.message)
            except EngineError as exc:
                code = code_of(exc)
                await context.abort(code, exc.message)
            except Exception:  # noqa: BLE001 - a status, never a dropped connection
                log.exception("unhandled error in gRPC %s", rpc)
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, "Service internal error: unexpected server error")
            if access is not None and access.mode is None and _lists(method, path):
                result = _only_allowed(result, access.collections)
            return result
        finally:
            if observe:
                self.observe(rpc, code, started)

    async def unserved(self, context: grpc.aio.ServicerContext, rpc: str, method: str,
                       template: str, path_params: dict[str, str]) -> NoReturn:
        """An RPC whose REST operation Quiver does not serve (REST answers 400 naming it):
        after the same key check as REST, UNIMPLEMENTED with that message."""
        started = time.perf_counter()
        code = grpc.StatusCode.UNIMPLEMENTED
        try:
            try:
                path = _path(template, path_params)
                access, check, refusal = self.authorize(context.invocation_metadata(), method,
                                                        path)
            except BadRequest as exc:
                code = code_of(exc)
                await context.abort(code, exc.message)
            except TokenRefused as exc:
                code = code_of_http(exc.status)
                await context.abort(code, exc.message)
            if refusal is not None:
                code = grpc.StatusCode.PERMISSION_DENIED
                await context.abort(code, refusal)
            await context.abort(code, BadRequest(not_served(method, template)).message)
            raise AssertionError("unreachable")
        finally:
            self.observe(rpc, code, started)

    async def body(self, context: grpc.aio.ServicerContext, build: Callable[[Any], Any],
                   msg: Any) -> Any:
        """The REST body of a message; one the converters cannot read (an empty oneof, a value
        out of range) is INVALID_ARGUMENT."""
        try:
            return build(msg)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            await self.abort(context, BadRequest(f"Wrong input: {exc}"))
            raise  # unreachable: abort raises

    async def abort(self, context: grpc.aio.ServicerContext, exc: EngineError) -> None:
        """Abort with an error found before the handler ran (a malformed message)."""
        await context.abort(code_of(exc), exc.message)


# Starlette's `{name:path}` converters: the concrete path is formatted without them
_CONVERTER = re.compile(r":[a-z]+}")
_PATH_PARAM = re.compile(r"{(\w+):path}")


def _path(template: str, params: dict[str, str]) -> str:
    """The concrete REST path of an RPC. A parameter that REST would read as one path segment
    must be one (non-empty, no '/'): else the access decision, made on the path, would see
    other segments than the handler does."""
    free = set(_PATH_PARAM.findall(template))
    for name, value in params.items():
        if name not in free and (not value or "/" in value):
            raise BadRequest(f"invalid {name}: {value!r}")
    return _CONVERTER.sub("}", template).format(**params)


def _lists(method: str, path: str) -> bool:
    return need_of(method, path)[0] is Need.LIST


def _only_allowed(result: Any, allowed: dict[str, str]) -> Any:
    """A per-collection token lists only its collections (as the REST middleware filters)."""
    if isinstance(result, dict):
        if isinstance(result.get("collections"), list):
            result = dict(result, collections=[c for c in result["collections"]
                                               if c.get("name") in allowed])
        if isinstance(result.get("aliases"), list):
            result = dict(result, aliases=[a for a in result["aliases"]
                                           if a.get("collection_name") in allowed])
    return result
