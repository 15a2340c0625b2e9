"""Top-k selection on the device without sorting the score matrix (bucket select).

`cupy.argpartition` is a full sort, so the device path selects in O(n) with reductions only:

1. group maxima: split each row into groups of `GROUP` scores and take each group's max;
2. a per-row lower bound T on the k-th best score: the k-th best group maximum (recursively,
   the k-th best of the maxima's maxima; every level stays a valid lower bound, because k
   groups each holding a value >= T prove k scores >= T);
3. the candidates `scores >= T` (typically k plus a few, at most about k*GROUP per level
   unless there are ties) are compacted into a small (b, C) matrix and sorted there.

Written against the xp API, so the same code runs under numpy in CI and under cupy on a device;
callers on the host use `gpu.topk.topk` (numpy's argpartition is already a real selection).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu.topk import NEG_INF
from gpu.xp import xp_of

GROUP = 32
SORT_WIDTH = 2048  # rows at most this wide are sorted directly
MAX_CANDIDATES = 1 << 16  # beyond this (massive ties), sorting the rows is the honest fallback


def _group_max(x: Any) -> Any:
    xp = xp_of(x)
    b, n = x.shape
    full = (n // GROUP) * GROUP
    parts = []
    if full:
        parts.append(x[:, :full].reshape(b, full // GROUP, GROUP).max(axis=2))
    if full < n:
        parts.append(x[:, full:].max(axis=1, keepdims=True))
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=1)


def _lower_bound(x: Any, k: int) -> Any:
    """(b,) values T with at least k entries >= T in every row (-inf if the row has fewer)."""
    xp = xp_of(x)
    b, n = x.shape
    if n <= SORT_WIDTH:
        if n < k:
            return xp.full(b, NEG_INF, dtype=x.dtype)
        return xp.sort(x, axis=1)[:, n - k]
    return _lower_bound(_group_max(x), k)


def _sorted_topk(scores: Any, k: int) -> tuple[Any, Any]:
    xp = xp_of(scores)
    order = xp.argsort(-scores, axis=1, kind="stable")[:, :k]
    return xp.take_along_axis(scores, order, axis=1), order


def select_topk(scores: Any, k: int) -> tuple[Any, Any]:
    """Row-wise top-k of a (b, n) float32 score matrix, best first, ties by lower index.

    Returns device/host arrays like the input: values (b, k') and int64 indices (b, k'),
    k' = min(k, n). Entries that are -inf (masked out) come last and callers drop them.
    """
    xp = xp_of(scores)
    b, n = scores.shape
    k = min(k, n)
    if k <= 0:
        return xp.empty((b, 0), dtype=xp.float32), xp.empty((b, 0), dtype=xp.int64)
    if n <= SORT_WIDTH or k * GROUP * 4 >= n:
        vals, idx = _sorted_topk(scores, k)
        return vals, idx.astype(xp.int64, copy=False)
    lowest = np.finfo(np.float32).min
    bound = xp.maximum(_lower_bound(scores, k), lowest)  # -inf rows: only finite candidates
    cand = scores >= bound[:, None]
    counts = cand.sum(axis=1)
    width = int(counts.max())
    if width > MAX_CANDIDATES:
        vals, idx = _sorted_topk(scores, k)
        return vals, idx.astype(xp.int64, copy=False)
    rows, cols = xp.nonzero(cand)  # row-major: columns ascending within a row
    starts = xp.cumsum(counts) - counts
    pos = xp.arange(rows.shape[0]) - starts[rows]
    width = max(width, k)
    buf_vals = xp.full((b, width), NEG_INF, dtype=xp.float32)
    buf_idx = xp.full((b, width), -1, dtype=xp.int64)
    buf_vals[rows, pos] = scores[rows, cols]
    buf_idx[rows, pos] = cols
    vals, order = _sorted_topk(buf_vals, k)
    return vals, xp.take_along_axis(buf_idx, order, axis=1)
