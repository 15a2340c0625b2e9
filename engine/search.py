"""Vector search over a view: one GEMM per segment per query batch, masked top-k, merged.

Searches sharing vector name, filter and index params go through one batch per segment;
segments with an HNSW index are searched through it (exactly over the unindexed tail);
per-segment results merge on the host; payloads and vectors are rendered for the final k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import ann
from engine.errors import BadInput
from engine.id_tracker import ROW_BITS
from engine.multi_search import search_multi
from engine.multivector import MultiVector
from engine.plan import SearchSpec
from engine.recommend import ExampleQuery, search_examples
from engine.render import render_handles
from engine.segment import Segment
from engine.sparse import SparseVector
from engine.sparse_search import search_sparse
from engine.tables import searched_segments
from engine.view import View
from gpu.device import DeviceFailure
from gpu.topk import merge


def search_batch(view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    """Run many searches; those sharing vector name and filter go through one GEMM per segment."""
    results: list[list[dict[str, Any]] | None] = [None] * len(specs)
    sparse = [i for i, s in enumerate(specs) if isinstance(s.vector, SparseVector)]
    if sparse:  # sparse vectors: posting lists on the host (engine/sparse_search.py)
        for i, res in zip(sparse, search_sparse(view, [specs[i] for i in sparse]), strict=True):
            results[i] = res
    multi = [i for i, s in enumerate(specs) if isinstance(s.vector, MultiVector)]
    if multi:  # multivectors: MaxSim over token rows (engine/multi_search.py)
        for i, res in zip(multi, search_multi(view, [specs[i] for i in multi]), strict=True):
            results[i] = res
    custom = [i for i, s in enumerate(specs) if isinstance(s.vector, ExampleQuery)]
    if custom:  # recommend / discover / context: exact custom scoring (engine/recommend.py)
        for i, res in zip(custom, search_examples(view, [specs[i] for i in custom]),
                          strict=True):
            results[i] = res
    groups: dict[tuple[str, str, int | None, bool], list[int]] = {}
    for i, s in enumerate(specs):
        if results[i] is not None:
            continue
        groups.setdefault((s.using, s.filter_key, s.hnsw_ef, s.exact), []).append(i)
    for idx in groups.values():
        for i, res in zip(idx, _search_group(view, [specs[i] for i in idx]), strict=True):
            results[i] = res
    return [r or [] for r in results]


def _search_group(view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    spec0 = specs[0]
    vspec = view.config.vector(spec0.using)
    dist = vspec.distance
    queries = _prepared_queries(specs, vspec.size, dist)
    k = max(s.limit + s.offset + len(s.exclude_ids) for s in specs)
    parts = []
    for seg, n, mask, allowed in searched_segments(view, spec0.pred, vspec.name,
                                                   spec0.filter_key):
        index = None if seg.on_device else seg.ann.get(vspec.name)
        if index is not None and ann.use_index(index, spec0.exact, allowed, n, ann.full_scan_rows(
                view.config.hnsw_config, seg.row_bytes(vspec.name))):
            vals, rows = _index_search(seg, n, vspec.name, queries, k, dist.metric, mask, allowed,
                                       index, spec0.hnsw_ef or view.hnsw_ef_construct())
        else:
            try:
                vals, rows = _segment_search(seg, 0, n, vspec.name, queries, k, dist.metric,
                                             None if allowed == n else mask)
            except DeviceFailure as exc:
                view.on_device_failure(str(exc))  # logged once; the same search runs on the host
                vals, rows = _segment_search(seg, 0, n, vspec.name, queries, k, dist.metric,
                                             None if allowed == n else mask)
        # a missing result carries -inf (and row -1): the finite check below drops it
        parts.append((vals, rows + (seg.seg_id << ROW_BITS)))
    vals, keys = merge(parts, k) if parts else (np.empty((len(specs), 0), np.float32),
                                                 np.empty((len(specs), 0), np.int64))
    # one pass for the whole batch: drop misses, apply thresholds, convert to Python once
    ok = np.isfinite(vals) & (keys >= 0)
    thresholds = [s.score_threshold for s in specs]
    if any(t is not None for t in thresholds):
        limits = np.array([-np.inf if t is None else dist.threshold_to_sim(t)
                           for t in thresholds], np.float64)
        ok &= vals > limits[:, None]  # strict, as Qdrant
    scores_all = dist.to_score(vals.astype(np.float64)).tolist()
    keys_all, ok_all = keys.tolist(), ok.tolist()
    out = []
    for qi, s in enumerate(specs):
        pairs = [(h, sc) for h, sc, good in zip(keys_all[qi], scores_all[qi], ok_all[qi],
                                                strict=True) if good]
        if s.exclude_ids:
            ex = set(view.ids.handles(s.exclude_ids))
            pairs = [p for p in pairs if p[0] not in ex]
        pairs = pairs[s.offset : s.offset + s.limit]
        out.append(render_handles(view, [h for h, _ in pairs], s.with_payload, s.with_vector,
                                  [sc for _, sc in pairs]))
    return out


def _prepared_queries(specs: list[SearchSpec], dim: int, dist: Any) -> np.ndarray:
    """(b, d) float32 queries, checked (dimension, finite) and prepared (Cosine: unit)."""
    if len(specs) == 1:
        queries = np.asarray(specs[0].vector, dtype=np.float32).reshape(1, -1)
    else:
        queries = np.stack([s.vector for s in specs]).astype(np.float32, copy=False)
    if queries.shape[1] != dim:
        raise BadInput(f"Vector dimension error: expected dim: {dim}, got {queries.shape[1]}")
    sq = np.einsum("ij,ij->i", queries, queries)  # also the norms Cosine needs
    if not np.isfinite(sq).all() and not np.isfinite(queries).all():
        raise BadInput("Query vector must not contain NaN or infinite values")
    return dist.prepare(queries, sq)


def _segment_search(seg: Segment, start: int, n: int, name: str, queries: np.ndarray, k: int,
                    metric: str, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact search over rows [start, n) of a segment; returned rows count from `start`."""
    return seg.search(name, start, n, queries, k, metric, mask)


def _index_search(seg: Segment, n: int, name: str, queries: np.ndarray, k: int, metric: str,
                  mask: np.ndarray, allowed: int, index: ann.HnswIndex, ef: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """HNSW over the indexed rows, exact scan of the unindexed tail, merged."""
    covered = min(index.rows, n)
    sel = None
    if allowed < n or index.rows > n:  # rows appended after this view began are not visible
        sel = np.zeros(index.rows, bool)
        sel[:covered] = mask[:covered]
        ef = ann.filtered_ef(ef, allowed, n)
    vals, rows = index.search(queries, k, ef, sel)
    if covered < n:
        tail = mask[covered:n]
        tv, tr = _segment_search(seg, covered, n, name, queries, k, metric,
                                 None if tail.all() else tail)
        tr = np.where(tr >= 0, tr + covered, -1)
        vals, rows = merge([(vals, rows), (tv, tr)], k)
    return vals, rows
