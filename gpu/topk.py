"""Top-k selection and merging, written once against the xp API.

Scores are always "higher is better" here; callers negate distances before and after.
Selection is a real partial selection (argpartition + sort of the k survivors), never a
full sort of the score matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpu.xp import xp_of

NEG_INF = np.float32(-np.inf)


def topk(scores: Any, k: int) -> tuple[Any, Any]:
    """Row-wise top-k of a (b, n) score matrix → (values (b, k'), indices (b, k')), k' = min(k, n).

    Rows are sorted best first. -inf entries are masked-out rows; callers drop them.
    """
    xp = xp_of(scores)
    b, n = scores.shape
    k = min(k, n)
    if k <= 0:
        return xp.empty((b, 0), dtype=xp.float32), xp.empty((b, 0), dtype=xp.int64)
    if b == 1:  # one query (the common request): 1-D selection, no axis helpers
        row = scores[0]
        if k == n:  # every row (a small segment): the stable sort alone, as below
            order = xp.argsort(-row, kind="stable")
            return row[order][None, :], order[None, :]
        part = xp.argpartition(-row, k - 1)[:k]
        vals = row[part]
        order = xp.argsort(-vals, kind="stable")
        return vals[order][None, :], part[order][None, :]
    if k < n:
        part = xp.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = xp.broadcast_to(xp.arange(n), (b, n))
    vals = xp.take_along_axis(scores, part, axis=1)
    order = xp.argsort(-vals, axis=1, kind="stable")
    return xp.take_along_axis(vals, order, axis=1), xp.take_along_axis(part, order, axis=1)


def topk_one(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`topk(sims[None], k)` for one query's 1-D host scores, step for step (ties resolve
    alike), without the 2-D views: (values, indices), best first. k >= 1, len(sims) >= 1."""
    n = len(sims)
    if k < n:
        part = (-sims).argpartition(k - 1)[:k]
        vals = sims[part]
        order = (-vals).argsort(kind="stable")
        return vals[order], part[order]
    order = (-sims).argsort(kind="stable")  # every row: the stable sort alone
    return sims[order], order


def merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-segment host results [(vals (b, ki), keys (b, ki))] into a global top-k.

    `keys` are int64 global handles (segment-tagged row numbers); -inf values are dropped by
    the caller. Ties keep the order of `parts` (stable), then of positions within a part.
    """
    parts = [p for p in parts if p[0].shape[1] > 0]
    if not parts:
        b = 0
        return np.empty((b, 0), np.float32), np.empty((b, 0), np.int64)
    if len(parts) == 1:
        vals, keys = parts[0]
        return vals[:, :k], keys[:, :k]
    vals = np.concatenate([p[0] for p in parts], axis=1)
    keys = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(keys, order, axis=1)
