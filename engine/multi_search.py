"""Search by a multivector (late interaction): MaxSim over each segment's token rows.

Score of a point = sum over the query's tokens of the best similarity to any of the point's
tokens (Qdrant's `max_sim`), with the vector's distance: Cosine (tokens unit length, on write
and here) and Dot use the inner product and rank descending; Euclid sums Qdrant's internal
similarity (minus the squared L2 distance) and reports sqrt(|sum|), ascending. Per segment it
is one GEMM (query tokens × token rows) and a segmented max (gpu/maxsim.py), over all of the
segment's rows when most are allowed, else over the allowed rows' tokens gathered first
(a filtered search, or the ColBERT pattern: rescoring a prefetch's few candidates).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import BadInput
from engine.id_tracker import ROW_BITS
from engine.multivector import MultiVector
from engine.plan import SearchSpec
from engine.render import render_handles
from engine.segment import Segment
from engine.tables import segment_mask_count
from engine.view import View
from gpu.maxsim import maxsim
from gpu.xp import to_host, xp_of

CHUNK = 1 << 26  # similarities per GEMM (256 MiB of float32)


def search_multi(view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    return [_search(view, s) for s in specs]


def segment_scores(seg: Segment, n: int, name: str, query: np.ndarray, metric: str,
                   mask: np.ndarray, allowed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, MaxSim sums) of the allowed rows among [0, n) (every allowed row has tokens:
    a stored multivector is never empty)."""
    store = seg.multi[name]
    ends = store.ends[:n]
    starts_all = np.empty(n, np.int64)
    starts_all[0] = 0
    starts_all[1:] = ends[:-1]
    if allowed * 2 >= n:  # most rows: the segment's token matrix as it is (no copy)
        nonempty = np.flatnonzero(ends > starts_all)
        starts = starts_all[nonempty]
        # at most CHUNK similarities at a time (whole points per chunk): memory stays bounded
        # whatever the segment size, and one chunk covers a default-sized segment's queries
        step = max(CHUNK // max(len(query), 1), 1)
        cuts = np.searchsorted(starts, np.arange(0, int(ends[-1]), step), side="left")
        cuts = np.unique(np.append(cuts, len(starts)))
        parts = []
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            lo, hi = int(starts[a]), int(ends[nonempty[b - 1]])
            parts.append(_maxsim(query, store.tokens[lo:hi], starts[a:b] - lo, metric))
        sums = np.concatenate(parts) if parts else np.empty(0, np.float64)
        keep = mask[nonempty]
        return nonempty[keep], sums[keep]
    rows = np.flatnonzero(mask)
    lengths = ends[rows] - starts_all[rows]
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    entry = np.repeat(starts_all[rows] - offsets[:-1], lengths) + np.arange(
        int(offsets[-1]), dtype=np.int64)
    return rows, _maxsim(query, store.tokens[entry], offsets[:-1], metric)


def _maxsim(query: np.ndarray, tokens: Any, starts: np.ndarray, metric: str) -> np.ndarray:
    if not len(starts):
        return np.empty(0, np.float64)
    xp = xp_of(tokens)
    return to_host(maxsim(xp, xp.asarray(query), tokens, xp.asarray(starts), metric))


def _search(view: View, s: SearchSpec) -> list[dict[str, Any]]:
    name = s.using or ""
    spec = view.config.multivectors.get(name)
    if spec is None:
        raise BadInput(f"Vector '{name}' is not a multivector: a multivector query does "
                       "not apply")
    assert isinstance(s.vector, MultiVector)
    query = np.asarray(s.vector.tokens, np.float32)
    if query.ndim != 2 or query.shape[1] != spec.size:
        raise BadInput(f"Vector dimension error: expected dim: {spec.size}, got "
                       f"{query.shape[-1]}")
    if not np.isfinite(query).all():
        raise BadInput("Query vector must not contain NaN or infinite values")
    query = spec.distance.prepare(query).astype(np.float32, copy=False)
    metric = spec.distance.metric
    k = s.limit + s.offset + len(s.exclude_ids)
    sims, handles = [], []
    for seg, n in view.segments:
        if n == 0 or name not in seg.multi:
            continue
        mask, allowed = segment_mask_count(view, seg, n, s.pred, name, s.filter_key)
        if allowed == 0:
            continue
        seg.touch()
        rows, sums = segment_scores(seg, n, name, query, metric, mask, allowed)
        sims.append(sums)
        handles.append(rows + (seg.seg_id << ROW_BITS))
    if not sims:
        return []
    sim = np.concatenate(sims)
    keys = np.concatenate(handles)
    scores = np.sqrt(np.abs(sim)) if metric == "l2" else sim  # Qdrant: Euclid as a distance
    if s.score_threshold is not None:  # strict, as Qdrant
        keep = scores < s.score_threshold if metric == "l2" else scores > s.score_threshold
        sim, keys, scores = sim[keep], keys[keep], scores[keep]
    if len(sim) > k:
        part = np.argpartition(-sim, k - 1)[:k]
        sim, keys, scores = sim[part], keys[part], scores[part]
    order = np.argsort(-sim, kind="stable")
    pairs = list(zip(keys[order].tolist(), scores[order].tolist(), strict=True))
    if s.exclude_ids:
        ex = set(view.ids.handles(s.exclude_ids))
        pairs = [p for p in pairs if p[0] not in ex]
    pairs = pairs[s.offset : s.offset + s.limit]
    return render_handles(view, [h for h, _ in pairs], s.with_payload, s.with_vector,
                          [sc for _, sc in pairs])
