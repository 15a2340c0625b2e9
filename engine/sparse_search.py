"""Search by a sparse vector: dot product over shared indices, through posting lists.

Each segment's rows are scored from its posting lists (engine/sparse.py), one numpy step per
query term, plus a scan of the rows appended since the lists were built. A point scores only
if it has the vector and shares at least one index with the query (Qdrant: no overlap, no
result; an overlap whose products are zero scores 0 and is returned). With `modifier: idf`
each query weight is multiplied by the term's IDF over the live points having the vector,
counted across every segment of the view (Qdrant's formula, engine.sparse.idf).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import BadInput
from engine.id_tracker import ROW_BITS
from engine.plan import SearchSpec
from engine.render import render_handles
from engine.segment import Segment
from engine.sparse import PostingIndex, SparseVector, idf
from engine.tables import segment_mask_count
from engine.view import View

TINY = float(np.finfo(np.float32).tiny) * 16  # products above it never round to 0


def search_sparse(view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    return [_search(view, s) for s in specs]


class _Part:
    """One segment's view of the query terms: posting slices cut to the visible rows, and
    the tail of rows the posting lists do not cover yet (scored from the CSR)."""

    def __init__(self, seg: Segment, n: int, name: str, query: SparseVector) -> None:
        self.seg, self.n, self.name = seg, n, name
        store = seg.sparse[name]
        index = store.posting_index(n)
        self.index: PostingIndex = index
        self.covered = covered = min(index.rows, n)
        self.slices: list[tuple[int, int, int]] = []
        self.dense: list[tuple[int, int]] = []  # (query position, dense slot): frequent terms
        for qpos, a, b, slot in index.postings_and_slots(query.indices):
            if index.rows > n:  # rows appended after this view began: not visible
                b = a + int(np.searchsorted(index.post_rows[a:b], n))
            if b > a:
                self.slices.append((qpos, a, b))
                if slot >= 0:
                    self.dense.append((qpos, slot))
        self.tail_rows: np.ndarray | None = None  # tail entries matching a query term:
        self.tail_q = self.tail_vals = np.empty(0)  # their rows, query positions, values
        if covered < n:
            csr = store.csr(n, covered)
            at = np.searchsorted(query.indices, csr.indices)
            at_ok = np.minimum(at, max(len(query.indices) - 1, 0))
            ok = (at < len(query.indices)) & (query.indices[at_ok] == csr.indices) \
                if len(query.indices) else np.zeros(len(csr.indices), bool)
            rows = np.repeat(np.arange(covered, n, dtype=np.int64), np.diff(csr.indptr))
            self.tail_rows, self.tail_q, self.tail_vals = rows[ok], at[ok], csr.values[ok]

    def document_frequencies(self, df: np.ndarray) -> None:
        """Add this segment's live points having each query term to `df` (a point whose
        vector was deleted keeps its CSR row: the presence mask leaves it out)."""
        live, _ = self.seg.live_mask(self.n, self.name)
        for qpos, a, b in self.slices:
            df[qpos] += int(np.count_nonzero(live[self.index.post_rows[a:b]]))
        if self.tail_rows is not None and len(self.tail_rows):
            np.add.at(df, self.tail_q[live[self.tail_rows]], 1)

    def scores(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dot products, hit) over rows [0, n): float32, accumulated in index order."""
        n, covered = self.n, self.covered
        acc = np.zeros(n, np.float32)
        rows, vals = self.index.post_rows, self.index.post_values
        dense = dict(self.dense)
        # with positive weights on both sides (whose products cannot underflow to 0) a row is
        # hit exactly when its score is > 0: no hit mask to maintain (BM25, SPLADE, ...)
        smallest = self.index.min_value
        if self.tail_rows is not None and len(self.tail_vals):
            smallest = min(smallest, float(self.tail_vals.min()))
        lightest = float(weights.min()) if len(weights) else 0.0
        positive = smallest > 0 and lightest > 0 and smallest * lightest > TINY
        hit = None if positive else np.zeros(n, bool)
        tmp = np.empty(covered, np.float32) if dense else None
        for qpos, a, b in self.slices:
            slot = dense.get(qpos)
            if slot is not None and self.index.dense is not None and tmp is not None:
                # a frequent term: one contiguous multiply-add over the covered rows
                np.multiply(self.index.dense[slot, :covered], weights[qpos], out=tmp)
                acc[:covered] += tmp
            else:
                r = rows[a:b]  # unique within one term: plain fancy-index adds are exact
                acc[r] += weights[qpos] * vals[a:b]
            if hit is not None:
                hit[rows[a:b]] = True
        if self.tail_rows is not None and len(self.tail_rows):
            np.add.at(acc, self.tail_rows, weights[self.tail_q] * self.tail_vals)
            if hit is not None:
                hit[self.tail_rows] = True
        return acc, (acc > 0 if hit is None else hit)


def _search(view: View, s: SearchSpec) -> list[dict[str, Any]]:
    name = s.using
    if not view.config.is_sparse(name):
        raise BadInput(f"Vector '{name}' is not a sparse vector: a sparse query does not apply")
    query = s.vector
    assert isinstance(query, SparseVector)
    weights = query.values.astype(np.float32, copy=True)
    parts = [_Part(seg, n, name, query) for seg, n in view.segments
             if n > 0 and name in seg.sparse]
    if view.config.sparse_idf(name):
        df = np.zeros(len(query.indices), np.int64)
        total = 0
        for p in parts:
            p.document_frequencies(df)
            total += p.seg.live_mask(p.n, name)[1]
        weights = (weights * idf(df, total)).astype(np.float32)
    k = s.limit + s.offset + len(s.exclude_ids)
    all_scores, all_keys = [], []
    for p in parts:
        if not p.slices and p.tail_rows is None:
            continue
        mask, allowed = segment_mask_count(view, p.seg, p.n, s.pred, name, s.filter_key)
        if allowed == 0:
            continue
        acc, hit = p.scores(weights)
        rows = np.flatnonzero(hit & mask)
        sc = acc[rows]
        if s.score_threshold is not None:
            keep = sc > np.float32(s.score_threshold)  # strict, as Qdrant
            rows, sc = rows[keep], sc[keep]
        if len(rows) > 400 * k:
            # the k-th best of a subsample (~200 k rows) is a lower bound of the k-th best
            # overall: one compare leaves a few hundred rows for the real selection
            # (ties at the bound are kept)
            sub = sc[:: len(rows) // (200 * k)]
            near = np.flatnonzero(sc >= np.partition(sub, len(sub) - k)[len(sub) - k])
            rows, sc = rows[near], sc[near]
        if len(rows) > k:
            top = np.argpartition(-sc, k - 1)[:k]
            rows, sc = rows[top], sc[top]
        p.seg.touch()
        all_scores.append(sc)
        all_keys.append(rows + (p.seg.seg_id << ROW_BITS))
    if not all_scores:
        return []
    scores = np.concatenate(all_scores)
    keys = np.concatenate(all_keys)
    order = np.lexsort((keys, -scores))  # best first; ties by segment and row
    handles, values = keys[order].tolist(), scores[order].tolist()
    if s.exclude_ids:
        ex = set(view.ids.handles(list(s.exclude_ids)))
        pairs = [(h, v) for h, v in zip(handles, values, strict=True) if h not in ex]
        handles, values = [h for h, _ in pairs], [v for _, v in pairs]
    handles = handles[s.offset : s.offset + s.limit]
    values = values[s.offset : s.offset + s.limit]
    return render_handles(view, handles, s.with_payload, s.with_vector, values)
