"""The one table error class → HTTP status, the errors only HTTP knows about, and Qdrant's
response envelopes.

A status is found by walking the exception's MRO: the most specific class in STATUS wins,
whatever the table's order, so a subclass (snapshots' ChecksumMismatch is a BadInput) answers
as its parent unless it has a row of its own. An EngineError outside both branches is a 500.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import PlainTextResponse, Response

from engine import errors as e


class Unauthorized(e.UserError):
    """No API key, or a wrong one. Qdrant's text has no prefix."""

    prefix = ""


class PayloadTooLarge(e.UserError):
    """A request body or snapshot upload over its configured limit."""

    prefix = "Payload too large: "


class MethodNotAllowed(e.UserError):
    """A known path asked with a method it does not serve."""

    prefix = "Method not allowed: "


STATUS: dict[type[e.EngineError], int] = {
    e.EngineError: 500,
    e.UserError: 400,
    e.BadInput: 400,
    e.BadRequest: 400,
    e.ValidationError: 400,
    Unauthorized: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    MethodNotAllowed: 405,
    e.Timeout: 408,
    e.Conflict: 409,
    e.AlreadyExists: 409,
    PayloadTooLarge: 413,
    e.Unprocessable: 422,
    e.ServiceError: 500,
    e.StorageError: 500,
    e.StorageFull: 507,
}


def status_of(exc: e.EngineError) -> int:
    for cls in type(exc).__mro__:
        code = STATUS.get(cls)
        if code is not None:
            return code
    return 500


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


_JSON_TYPE = (b"content-type", b"application/json")


def ok(result: Any, started: float) -> JSONResponse:
    """Qdrant's success envelope: the JSONResponse Starlette would build (same body, same
    raw headers in the same order), without its generic header set-up (a few per cent of a
    small query's front, py-spy)."""
    resp = JSONResponse.__new__(JSONResponse)
    resp.status_code = 200
    resp.background = None
    resp.body = body = orjson.dumps(
        {"result": result, "status": "ok", "time": time.perf_counter() - started},
        option=orjson.OPT_SERIALIZE_NUMPY)
    resp.raw_headers = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]
    return resp


def error(message: str, status: int, started: float | None = None) -> JSONResponse:
    elapsed = time.perf_counter() - started if started is not None else 0.0
    return JSONResponse({"status": {"error": message}, "time": elapsed}, status_code=status)


def from_exception(exc: e.EngineError, started: float | None = None) -> JSONResponse:
    """Qdrant's error envelope, with the status from STATUS."""
    return error(exc.message, status_of(exc), started)


def plain_text(exc: e.EngineError) -> Response:
    """The bare message, no envelope: how Qdrant answers refusals made before its handlers
    run (401s, the 403 of a snapshot upload)."""
    return PlainTextResponse(exc.message, status_of(exc))
