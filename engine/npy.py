"""Arrays as .npy bytes without copying, and their sha256 (snapshot members).

Sealed segments never change, so the sha256 of their vectors member is computed once in the
background (Collection.digest_sealed) and a snapshot only hashes what is still growing."""

from __future__ import annotations

import hashlib
import io

import numpy as np


def npy_parts(a: np.ndarray) -> list[bytes | memoryview]:
    """An .npy file as [header, data] without copying the data."""
    a = np.ascontiguousarray(a)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(a))
    data = a.data.cast("B") if a.size else b""  # (an empty array can't be cast)
    return [buf.getvalue(), data]


def parts_sha256(parts: list[bytes | memoryview]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def npy_sha256(a: np.ndarray) -> str:
    return parts_sha256(npy_parts(a))
