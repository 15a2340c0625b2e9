"""One service layer, two transports: an RPC runs the very handler its REST route runs.

Each RPC is translated into the REST call it stands for — a method, a route template, path
parameters, query parameters and a JSON-shaped body — and `Bridge.call` then does what the HTTP
stack does for that route: the same API-key/JWT decision (`api.auth.need_of` on the concrete
path), the same handler from the routes table (`endpoint(fn).handler`), in the same thread
pool, and engine errors become gRPC status codes (api/rpc/status.py) with Qdrant's messages.
No query, write or snapshot logic lives in api/rpc.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import grpc
from starlette.concurrency import run_in_threadpool

from api.auth import (
    Access,
    Authenticator,
    Need,
    TokenRefused,
    keys_from_settings,
    need_of,
    value_exists,
)
from api.rpc.status import code_of, code_of_http
from engine.errors import EngineError

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


def presented_key(metadata: Any) -> bytes | None:
    """`api-key` wins over `authorization: Bearer`, as over REST."""
    bearer = None
    for key, value in metadata or ():
        if key == "api-key":
            return value.encode() if isinstance(value, str) else value
        if key == "authorization" and bearer is None:
            raw = value.encode() if isinstance(value, str) else value
            if raw.startswith(b"Bearer "):
                bearer = raw[len(b"Bearer "):]
    return bearer


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

    def handler(self, method: str, template: str) -> Handler:
        try:
            return self.handlers[(method, template)]
        except KeyError:
            raise LookupError(f"no REST route {method} {template}") from None

    def authorize(self, metadata: Any, method: str, path: str) -> tuple[Access | None, Any]:
        """The caller's Access for this call (None: no keys configured), and the
        value_exists check its token asks for; raises TokenRefused."""
        if self.auth is None:
            return None, None
        access, check = self.auth.access(presented_key(metadata))
        need, name = need_of(method, path)
        message = access.refusal(need, name)
        if message is not None:
            raise TokenRefused(403, f"Forbidden: {message}")
        return access, check

    async def call(self, context: grpc.aio.ServicerContext, rpc: str, method: str,
                   template: str, path_params: dict[str, str] | None = None,
                   query: dict[str, str] | None = None, body: Any = None) -> Any:
        """Run the REST route `method template` for an RPC and return its handler's result
        (the JSON-shaped value REST would put under "result"). Refusals and engine errors
        abort the RPC with Qdrant's status code and message."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            params = path_params or {}
            path = _CONVERTER.sub("}", template).format(**params)
            try:
                access, check = self.authorize(context.invocation_metadata(), method, path)
            except TokenRefused as exc:
                code = code_of_http(exc.status)
                await context.abort(code, exc.message)
            handler = self.handler(method, template)
            req = RpcRequest(self.app, method, path, params, query or {}, access)

            def run() -> Any:
                if check is not None:
                    value_exists(self.app.state.catalog, check)
                return handler(req, body)

            try:
                result = await run_in_threadpool(run)
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
            if self.metrics is not None:
                self.metrics.observe_rpc(rpc, code.name, time.perf_counter() - started)

    async def abort(self, context: grpc.aio.ServicerContext, exc: EngineError) -> None:
        """Abort with an error found before the handler ran (a malformed message)."""
        await context.abort(code_of(exc), exc.message)


# Starlette's `{name:path}` converters: the concrete path is formatted without them
_CONVERTER = re.compile(r":[a-z]+}")


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
