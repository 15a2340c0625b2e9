"""Point ids: unsigned 64-bit integers or UUIDs (any RFC 4122 textual form).

Internally an id is a Python int or the canonical lowercase hyphenated UUID string; the two
types never collide as dict keys. For ordering (scroll), ids map to (kind, hi, lo) arrays:
all integers first, ascending, then UUIDs ascending by their 128-bit value.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from engine.errors import BadRequest

PointId = int | str
U64_MAX = (1 << 64) - 1

ID_DTYPE = np.dtype([("kind", "u1"), ("hi", "<u8"), ("lo", "<u8")])


def parse_id(value: Any) -> PointId:
    if isinstance(value, bool):
        raise BadRequest(f"Invalid point id: {value!r}")
    if isinstance(value, int):
        if 0 <= value <= U64_MAX:
            return value
        raise BadRequest(f"Invalid point id: {value} is not an unsigned 64-bit integer")
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
        raise BadRequest(f"Unable to parse UUID: {value}")
    raise BadRequest(f"Invalid point id: {value!r}, expected unsigned integer or UUID")


def parse_ids(values: Any) -> list[PointId]:
    if not isinstance(values, list):
        raise BadRequest("point ids must be a list")
    if all(type(v) is int and 0 <= v <= U64_MAX for v in values):
        return list(values)  # fast path: the common all-integer batch
    return [parse_id(v) for v in values]


def ids_to_records(ids: list[PointId]) -> np.ndarray:
    """ids → structured (kind, hi, lo) array, sortable with np.lexsort / np.sort."""
    out = np.zeros(len(ids), dtype=ID_DTYPE)
    if not ids:
        return out
    if all(type(v) is int for v in ids):
        out["lo"] = np.array(ids, dtype=np.uint64)
        return out
    for i, v in enumerate(ids):  # mixed/UUID batches only: bounded by the batch size
        if isinstance(v, int):
            out[i] = (0, 0, v)
        else:
            n = uuid.UUID(v).int
            out[i] = (1, n >> 64, n & U64_MAX)
    return out


def records_to_ids(rec: np.ndarray) -> list[PointId]:
    kinds = rec["kind"]
    if not kinds.any():
        return rec["lo"].tolist()
    hi = rec["hi"].tolist()
    lo = rec["lo"].tolist()
    return [
        str(uuid.UUID(int=(h << 64) | low)) if k else low
        for k, h, low in zip(kinds.tolist(), hi, lo, strict=True)
    ]


def id_order_key(pid: PointId) -> tuple[int, int]:
    return (0, pid) if isinstance(pid, int) else (1, uuid.UUID(pid).int)
