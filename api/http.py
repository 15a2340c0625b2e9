"""HTTP plumbing shared by the routers: the endpoint wrapper, body parsing, middlewares."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, from_exception, ok
from engine import QUIVER_VERSION
from engine.errors import BadRequest, EngineError, ServiceError

log = logging.getLogger("quiver.http")
QDRANT_API_VERSION = "1.19.0"

Handler = Callable[[Request, Any], Any]


def parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Format error in JSON body: {exc}") from None


def endpoint(fn: Handler, read_body: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a sync handler fn(request, body) → result: the body is read on the event loop,
    the work runs in the thread pool, and the result goes into Qdrant's envelope."""

    async def run(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = parse_json(await request.body()) if read_body else None
            result = await run_in_threadpool(fn, request, body)
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
    return run


def body_dict(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


_SLASHES = re.compile(r"/{2,}")


class NormalizePath:
    """Qdrant's NormalizePath::trim(): merge repeated slashes, strip the trailing slash.
    Also stamps Quiver's own version on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if "//" in path or (len(path) > 1 and path.endswith("/")):
                path = _SLASHES.sub("/", path)
                if len(path) > 1:
                    path = path.rstrip("/") or "/"
                scope = dict(scope, path=path, raw_path=path.encode())

            async def send_with_header(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    headers.append((b"x-quiver-version", QUIVER_VERSION.encode()))
                    message = dict(message, headers=headers)
                await send(message)

            await self.app(scope, receive, send_with_header)
            return
        await self.app(scope, receive, send)


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
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                await _too_large(scope, receive, send, limit)
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
