"""Top-k selection on the device without sorting the score matrix (bucket select).

`cupy.argpartition` is a full sort, so the device path selects in O(n) with reductions only:

1. group maxima: split each row into groups of `GROUP` scores and take each group's max
   (the only pass over the full score matrix);
2. a per-row lower bound T on the k-th best score: the k-th best group maximum (recursively,
   the k-th best of the maxima's maxima; every level stays a valid lower bound, because k
   groups each holding a value >= T prove k scores >= T);
3. only groups whose maximum reaches T can hold a top-k score: those few groups (about k per
   row unless there are ties) are gathered into a small matrix and sorted there.

Written against the xp API, so the same code runs under numpy in CI and under cupy on a device;
callers on the host use `gpu.topk.topk` (numpy's argpartition is already a real selection).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu import kernels
from gpu.topk import NEG_INF
from gpu.xp import xp_of

GROUP = 32
SORT_WIDTH = 4096  # rows at most this wide are sorted directly
MAX_CANDIDATES = 1 << 16  # beyond this (massive ties), sorting the rows is the honest fallback


def _group_max(x: Any) -> Any:
    """Max of each run of GROUP columns; a ragged last run is its own group."""
    xp = xp_of(x)
    b, n = x.shape
    full = (n // GROUP) * GROUP
    parts = []
    if full and xp is not np and x.dtype == xp.float32:
        parts.append(kernels.group_max32(xp.ascontiguousarray(x), full // GROUP))
    elif full:
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
    return xp.take_along_axis(scores, order, axis=1), order.astype(xp.int64, copy=False)


def select_topk(scores: Any, k: int) -> tuple[Any, Any]:
    """Row-wise top-k of a (b, n) float32 score matrix, best first, ties by lower index.

    Returns arrays of the input's module: values (b, k') and int64 indices (b, k'),
    k' = min(k, n). Entries that are -inf (masked out) come last and callers drop them.
    Only one full pass reads the scores (the group maxima); everything after works on
    groups, and on the few groups whose maximum reaches the bound.
    """
    xp = xp_of(scores)
    b, n = scores.shape
    k = min(k, n)
    if k <= 0:
        return xp.empty((b, 0), dtype=xp.float32), xp.empty((b, 0), dtype=xp.int64)
    if n <= SORT_WIDTH or k * GROUP * 4 >= n:
        return _sorted_topk(scores, k)
    if xp is not np and k <= kernels.CAP and scores.dtype == xp.float32 and b <= 65535:
        return _select_device(xp, xp.ascontiguousarray(scores), k)
    return _select_xp(xp, scores, k)


def _select_device(xp: Any, scores: Any, k: int) -> tuple[Any, Any]:
    """The same selection fused into two kernels (gpu/kernels.py)."""
    bound = xp.maximum(_lower_bound(_group_max(scores), k), np.finfo(np.float32).min)
    vals, idx, overflow = kernels.block_topk(scores, bound, k)
    if int(overflow.max()):  # rows with more than CAP candidates (ties): the xp path
        bad = xp.flatnonzero(overflow)
        vals[bad], idx[bad] = _select_xp(xp, scores[bad], k)
    return vals, idx


def _select_xp(xp: Any, scores: Any, k: int) -> tuple[Any, Any]:
    b, n = scores.shape
    g = n // GROUP
    groups = scores[:, : g * GROUP].reshape(b, g, GROUP)
    gmax = groups.max(axis=2)
    # every score >= bound lies in a group whose max >= bound; -inf rows keep finite groups only
    bound = xp.maximum(_lower_bound(gmax, k), np.finfo(np.float32).min)
    chosen = gmax >= bound[:, None]
    counts = chosen.sum(axis=1)
    width = int(counts.max())
    if width * GROUP > MAX_CANDIDATES:  # massive ties: sorting the rows is the honest fallback
        return _sorted_topk(scores, k)
    width = max(width, -(-k // GROUP))  # room for k entries even when few groups are finite
    rows, gs = xp.nonzero(chosen)  # row-major: groups ascending within a row
    slot = xp.arange(rows.shape[0]) - (xp.cumsum(counts) - counts)[rows]
    cand = xp.full((b, width, GROUP), NEG_INF, dtype=xp.float32)
    cand_group = xp.full((b, width), -1, dtype=xp.int64)
    cand[rows, slot] = groups[rows, gs]
    cand_group[rows, slot] = gs
    offsets = xp.arange(GROUP, dtype=xp.int64)
    cand_idx = xp.where(cand_group[:, :, None] >= 0,
                        cand_group[:, :, None] * GROUP + offsets, -1).reshape(b, -1)
    cand = cand.reshape(b, -1)
    if g * GROUP < n:  # the ragged tail is always a candidate
        cand = xp.concatenate([cand, scores[:, g * GROUP :]], axis=1)
        tail = xp.arange(g * GROUP, n, dtype=xp.int64)
        cand_idx = xp.concatenate([cand_idx, xp.broadcast_to(tail, (b, n - g * GROUP))], axis=1)
    vals, order = _sorted_topk(cand, k)
    return vals, xp.take_along_axis(cand_idx, order, axis=1)
