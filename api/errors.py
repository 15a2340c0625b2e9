"""The one table EngineError → HTTP status, and Qdrant's response envelopes."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import Response

from engine import errors as e

STATUS: list[tuple[type[e.EngineError], int]] = [
    (e.NotFound, 404),
    (e.AlreadyExists, 409),
    (e.Conflict, 409),
    (e.Unauthorized, 401),
    (e.Forbidden, 403),
    (e.PayloadTooLarge, 413),
    (e.Unprocessable, 422),
    (e.StorageFull, 507),
    (e.Timeout, 408),
    (e.BadInput, 400),
    (e.BadRequest, 400),
    (e.ValidationError, 400),
    (e.StorageError, 500),
]


def status_of(exc: e.EngineError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def ok(result: Any, started: float) -> JSONResponse:
    return JSONResponse({"result": result, "status": "ok", "time": time.perf_counter() - started})


def error(message: str, status: int, started: float | None = None) -> JSONResponse:
    elapsed = time.perf_counter() - started if started is not None else 0.0
    return JSONResponse({"status": {"error": message}, "time": elapsed}, status_code=status)


def from_exception(exc: e.EngineError, started: float | None = None) -> JSONResponse:
    return error(exc.message, status_of(exc), started)
