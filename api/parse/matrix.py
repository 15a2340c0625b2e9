"""SearchMatrixRequest body → engine.matrix.MatrixRequest."""

from __future__ import annotations

from typing import Any

from engine.errors import BadRequest
from engine.filters import parse_filter
from engine.matrix import DEFAULT_LIMIT, DEFAULT_SAMPLE, MatrixRequest


def _count(v: Any, name: str, default: int, minimum: int) -> int:
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool):
        raise BadRequest(f"`{name}` must be an integer, got {v!r}")
    if v < minimum:
        raise BadRequest(f"{name} value {v} is invalid. Must be {minimum} or larger.")
    return v


def matrix_request(b: dict[str, Any]) -> MatrixRequest:
    sample = _count(b.get("sample"), "sample", DEFAULT_SAMPLE, 2)
    lim = _count(b.get("limit"), "limit", DEFAULT_LIMIT, 1)
    using = b.get("using")
    if using is not None and not isinstance(using, str):
        raise BadRequest("`using` must be a string")
    return MatrixRequest(sample, lim, parse_filter(b.get("filter")), using)
