"""Fusion of ranked result lists: reciprocal rank fusion (RRF) and distribution-based score
fusion (DBSF), as Qdrant computes them.

A result list is (ids, scores) in rank order. Points are identified across lists by id; the
fused list is sorted by score, descending, ties keeping the order in which points first
appear (list by list), which is how qdrant-client's local mode breaks them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.errors import BadRequest
from engine.ids import PointId

Ranked = tuple[list[PointId], np.ndarray]  # ids in rank order, their scores (float64)

DEFAULT_RRF_K = 2  # Qdrant's default ranking constant


def union(lists: Sequence[Ranked]) -> tuple[list[PointId], list[np.ndarray]]:
    """The distinct ids of all lists in order of first appearance, and for each list the
    position of each of its points in that union."""
    index: dict[PointId, int] = {}
    positions = [np.fromiter((index.setdefault(i, len(index)) for i in ids), np.int64, len(ids))
                 for ids, _ in lists]
    return list(index), positions


def _ranked(ids: list[PointId], scores: np.ndarray, limit: int) -> Ranked:
    order = np.argsort(-scores, kind="stable")[:limit]  # stable: ties by first appearance
    return [ids[i] for i in order.tolist()], scores[order]


def rrf(lists: Sequence[Ranked], limit: int, k: int = DEFAULT_RRF_K,
        weights: Sequence[float] | None = None) -> Ranked:
    """Σ over lists of 1 / ((rank + 1) / weight + k - 1), rank from 0 (weight 1: 1/(rank+k));
    a list of weight ≤ 0 contributes nothing."""
    if weights is not None and len(weights) != len(lists):
        raise BadRequest(f"RRF weights must match the number of prefetches: got {len(weights)} "
                         f"weights for {len(lists)} prefetches")
    ids, positions = union(lists)
    total = np.zeros(len(ids), np.float64)
    for j, pos in enumerate(positions):
        w = 1.0 if weights is None else float(weights[j])
        if w <= 0 or len(pos) == 0:
            continue
        ranks = np.arange(len(pos), dtype=np.float64)
        np.add.at(total, pos, 1.0 / ((ranks + 1.0) / w + k - 1.0))
    return _ranked(ids, total, limit)


def dbsf_normalise(scores: np.ndarray) -> np.ndarray:
    """One list's scores mapped through mean ± 3 sample standard deviations onto [0, 1]
    (a single point, or all scores equal: 0.5)."""
    n = len(scores)
    if n == 1:
        return np.full(1, 0.5)
    mean = scores.mean()
    var = ((scores - mean) ** 2).sum() / (n - 1)
    if var == 0:
        return np.full(n, 0.5)
    std = np.sqrt(var)
    low, high = mean - 3 * std, mean + 3 * std
    return (scores - low) / (high - low)


def dbsf(lists: Sequence[Ranked], limit: int) -> Ranked:
    """Σ over lists of each list's normalised scores."""
    ids, positions = union(lists)
    total = np.zeros(len(ids), np.float64)
    for (_, scores), pos in zip(lists, positions, strict=True):
        if len(pos):
            np.add.at(total, pos, dbsf_normalise(np.asarray(scores, np.float64)))
    return _ranked(ids, total, limit)
