"""Example-based queries: recommend, discover, context.

`average_vector` recommendation is a plain nearest search with one computed vector
(`average_vector`). The other strategies score each candidate against every example with a
custom objective, as Qdrant does: per segment, one GEMM of the candidate rows against all
example vectors (Qdrant's internal similarities: Cosine and Dot the dot product of unit / raw
vectors, Euclid the negated squared distance, Manhattan the negated L1 distance), then the
strategy's formula over the columns. The candidates are every allowed row (exact), or, where
a nearest search would walk the segment's HNSW graph, the graph neighbours of the examples
that pull results in (`_leads`) plus the unindexed tail: approximate, as Qdrant's graph
search with a custom scorer, a few graph walks instead of a full scan.

The formulas:

* best_score: best positive p and best negative n (-inf without examples); sigmoid(p) when
  p > n, else -sigmoid(n) (sigmoid: Qdrant's scaled fast sigmoid).
* sum_scores: the sum of positive similarities minus the sum of negative ones.
* discover: per context pair +1 / 0 / -1 as the candidate is nearer the positive, as near,
  or nearer the negative; plus sigmoid(similarity to the target).
* context: per pair fast_sigmoid(min(pos - neg - EPSILON, 0)), summed.

Scores are reported as computed (higher is better for every distance); a score threshold
keeps scores strictly above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import ann
from engine.distance import Distance
from engine.errors import BadInput
from engine.id_tracker import ROW_BITS
from engine.multivector import MultiVector
from engine.plan import SearchSpec
from engine.render import render_handles
from engine.sparse import SparseVector
from engine.tables import searched_segments
from engine.view import View

EPSILON = 1.1920929e-7  # f32::EPSILON, as Qdrant's context score
STRATEGIES = ("average_vector", "best_score", "sum_scores")


@dataclass(frozen=True)
class ExampleQuery:
    """A custom-scored query: `kind` best_score | sum_scores | discover | context. For
    discover and context, positive[i] and negative[i] form the i-th context pair."""

    kind: str
    positive: np.ndarray  # (p, d) float32, raw (not yet prepared)
    negative: np.ndarray  # (q, d) float32
    target: np.ndarray | None = None  # (d,) discover only


def average_vector(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """avg(pos) + avg(pos) - avg(neg) (just avg(pos) without negatives), as Qdrant."""
    mean_pos = positive.astype(np.float64).mean(axis=0)
    if len(negative) == 0:
        return mean_pos.astype(np.float32)
    return (mean_pos + mean_pos - negative.astype(np.float64).mean(axis=0)).astype(np.float32)


def _sparse_mean(vectors: list[SparseVector]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted indices, mean weights) over the union of indices (absent entries count 0)."""
    idx = np.concatenate([v.indices for v in vectors]).astype(np.int64)
    val = np.concatenate([v.values for v in vectors]).astype(np.float64)
    uniq, inv = np.unique(idx, return_inverse=True)
    return uniq, np.bincount(inv, weights=val, minlength=len(uniq)) / len(vectors)


def average_sparse(positive: list[SparseVector], negative: list[SparseVector]) -> SparseVector:
    """average_vector over sparse vectors, as Qdrant: the mean of the positives, and with
    negatives 2 * mean(pos) - mean(neg) over the union of their indices."""
    pi, pv = _sparse_mean(positive)
    if not negative:
        return SparseVector(pi.astype(np.uint32), pv.astype(np.float32))
    ni, nv = _sparse_mean(negative)
    uniq, inv = np.unique(np.concatenate([pi, ni]), return_inverse=True)
    out = np.zeros(len(uniq))
    np.add.at(out, inv[: len(pi)], 2.0 * pv)
    np.add.at(out, inv[len(pi):], -nv)
    return SparseVector(uniq.astype(np.uint32), out.astype(np.float32))


def average_multi(positive: list[MultiVector], negative: list[MultiVector]) -> MultiVector:
    """average_vector over multivectors, as Qdrant: every positive token and every negated
    negative token, as one multivector query."""
    tokens = [p.tokens for p in positive] + [-n.tokens for n in negative]
    return MultiVector(np.concatenate(tokens, axis=0).astype(np.float32))


def _fast_sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        out = x / (1.0 + np.abs(x))
    return np.where(np.isfinite(x), out, x)


def _scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (_fast_sigmoid(x) + 1.0)


def _examples(q: ExampleQuery) -> np.ndarray:
    """All example vectors as one (e, d) matrix: positives, negatives, then the target."""
    parts = [q.positive, q.negative]
    if q.target is not None:
        parts.append(q.target.reshape(1, -1))
    return np.concatenate(parts, axis=0)


def check_examples(q: ExampleQuery, dim: int) -> None:
    ex = _examples(q)
    if ex.shape[1] != dim:
        raise BadInput(f"Vector dimension error: expected dim: {dim}, got {ex.shape[1]}")
    if not np.isfinite(ex).all():
        raise BadInput("Query vector must not contain NaN or infinite values")


def similarities(dist: Distance, rows: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """(e, n) internal similarities of examples (raw) to candidate rows (as stored); one
    row per example, so the strategies reduce over contiguous memory."""
    if dist.metric == "ip":
        ex = dist.prepare(examples.astype(np.float32))
        return ex @ rows.T
    if dist.metric == "l2":  # -|r - e|² = 2 e·r - |e|² - |r|²
        r2 = np.einsum("ij,ij->i", rows, rows)[None, :]
        e2 = np.einsum("ij,ij->i", examples, examples)[:, None]
        return 2.0 * (examples @ rows.T) - e2 - r2
    out = np.empty((len(examples), len(rows)), np.float32)
    for j, e in enumerate(examples):  # L1 has no GEMM form: one pass per example
        out[j] = -np.abs(rows - e).sum(axis=1)
    return out


def score(q: ExampleQuery, sims: np.ndarray) -> np.ndarray:
    """The strategy's score of each candidate from its (e, n) similarities (float64)."""
    p, n = len(q.positive), len(q.negative)
    pos, neg = sims[:p], sims[p:p + n]
    size = sims.shape[1]
    if q.kind == "best_score":  # max in float32 (exact), the sigmoid in float64
        best_p = pos.max(axis=0).astype(np.float64) if p else np.full(size, -np.inf)
        best_n = neg.max(axis=0).astype(np.float64) if n else np.full(size, -np.inf)
        return np.where(best_p > best_n, _scaled_sigmoid(best_p), -_scaled_sigmoid(best_n))
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    if q.kind == "sum_scores":
        return pos.sum(axis=0) - neg.sum(axis=0)
    if q.kind == "context":
        return _fast_sigmoid(np.minimum(pos - neg - EPSILON, 0.0)).sum(axis=0)
    if q.kind == "discover":
        ranks = np.sign(pos - neg).sum(axis=0)
        return ranks + _scaled_sigmoid(sims[p + n].astype(np.float64))
    raise ValueError(f"unknown example query kind {q.kind!r}")


def search_examples(view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    """Exact custom-scored searches (each spec's `vector` an ExampleQuery). Searches sharing
    vector name and filter share the GEMM: per segment, the rows against the examples of
    all of them at once."""
    out: list[list[dict[str, Any]]] = [[] for _ in specs]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault((s.using, s.filter_key), []).append(i)
    for idx in groups.values():
        for i, res in zip(idx, _search_group(view, [specs[i] for i in idx]), strict=True):
            out[i] = res
    return out


def _search_group(view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    spec0 = specs[0]
    vspec = view.config.vector(spec0.using)
    queries: list[ExampleQuery] = []
    for s in specs:
        assert isinstance(s.vector, ExampleQuery)
        check_examples(s.vector, vspec.size)
        queries.append(s.vector)
    blocks = [_examples(q) for q in queries]
    bounds = np.cumsum([0] + [len(b) for b in blocks])
    examples = np.concatenate(blocks)
    dist = vspec.distance
    per_spec: list[list[np.ndarray]] = [[] for _ in specs]
    handle_parts: list[list[np.ndarray]] = [[] for _ in specs]
    for seg, n, mask, allowed in searched_segments(view, spec0.pred, vspec.name,
                                                   spec0.filter_key):
        base = seg.seg_id << ROW_BITS
        index = None if seg.on_device else seg.ann.get(vspec.name)
        graph = index is not None and ann.use_index(index, spec0.exact, allowed, n,
                                                    ann.full_scan_rows(view.config.hnsw_config,
                                                                       seg.row_bytes(vspec.name)))
        leads = [_leads(q, dist) if graph else None for q in queries]
        full = [j for j, lead in enumerate(leads) if lead is None]
        if full:  # exact: every allowed row against the examples of all these queries, one GEMM
            rows = np.flatnonzero(mask)
            mat = (seg.host_rows(vspec.name, n) if allowed == n
                   else seg.vectors_of(vspec.name, rows))
            sims = similarities(dist, np.asarray(mat, np.float32), examples)
            for j in full:
                per_spec[j].append(score(queries[j], sims[bounds[j]:bounds[j + 1]]))
                handle_parts[j].append(rows + base)
        for j, lead in enumerate(leads):
            if lead is None:
                continue
            assert index is not None
            s = specs[j]
            rows = _graph_candidates(index, n, mask, allowed, lead,
                                     2 * (s.limit + s.offset + len(s.exclude_ids)),
                                     s.hnsw_ef or view.hnsw_ef_construct())
            mat = np.asarray(seg.vectors_of(vspec.name, rows), np.float32)
            per_spec[j].append(score(queries[j], similarities(dist, mat, blocks[j])))
            handle_parts[j].append(rows + base)
    return [_top(view, s, np.concatenate(parts), np.concatenate(hp)) if hp else []
            for s, parts, hp in zip(specs, per_spec, handle_parts, strict=True)]


def _leads(q: ExampleQuery, dist: Distance) -> np.ndarray | None:
    """The prepared vectors whose graph neighbours hold a query's best results, or None
    where no such vectors exist (scan everything): best_score, the positives (the top k by
    best positive are each in the top k of their best positive); sum_scores, for a dot product
    the one vector sum(pos) - sum(neg) it is linear in, for Euclid with more positives than
    negatives the point it is a distance to, else the positives. Discover and context: none —
    their context pairs outrank closeness (the target's neighbours held 70% of discover's
    exact top 10 in a trial), so they scan."""
    p, n = len(q.positive), len(q.negative)
    if q.kind == "sum_scores" and dist.metric == "ip" and p:
        ex = dist.prepare(np.concatenate([q.positive, q.negative]).astype(np.float32))
        lead = ex[:p].sum(axis=0) - ex[p:].sum(axis=0)
        return lead.reshape(1, -1).astype(np.float32)
    if q.kind == "sum_scores" and dist.metric == "l2" and p > n:
        # sum(-|x-p|²) - sum(-|x-n|²) = -(p-n)|x - c|² + const, c = (sum p - sum n) / (p-n)
        c = (q.positive.astype(np.float64).sum(axis=0)
             - q.negative.astype(np.float64).sum(axis=0)) / (p - n)
        return c.reshape(1, -1).astype(np.float32)
    if q.kind in ("best_score", "sum_scores") and len(q.positive):
        return dist.prepare(q.positive.astype(np.float32))
    return None


def _graph_candidates(index: ann.HnswIndex, n: int, mask: np.ndarray, allowed: int,
                      leads: np.ndarray, k: int, ef: int) -> np.ndarray:
    """Sorted rows: the allowed graph neighbours of the leads (one batched walk), plus every
    allowed row past the graph's end (appended since it was built)."""
    covered = min(index.rows, n)
    sel = None
    if allowed < n or index.rows > n:
        sel = np.zeros(index.rows, bool)
        sel[:covered] = mask[:covered]
        ef = ann.filtered_ef(ef, allowed, n)
    _, found = index.search(leads, k, ef, sel)
    found = found[(found >= 0) & (found < covered)]
    tail = covered + np.flatnonzero(mask[covered:n])
    return np.union1d(found, tail).astype(np.int64)


def _top(view: View, spec: SearchSpec, scores: np.ndarray, handles: np.ndarray
         ) -> list[dict[str, Any]]:
    """Threshold (strict, as Qdrant), exclusions, top limit + offset, rendered."""
    keep = ~np.isnan(scores)
    if spec.score_threshold is not None:
        keep &= scores > spec.score_threshold
    if spec.exclude_ids:
        keep &= ~np.isin(handles, np.array(view.ids.handles(spec.exclude_ids), np.int64))
    scores, handles = scores[keep], handles[keep]
    k = spec.limit + spec.offset
    if k < len(scores):  # top-k without sorting everything
        part = np.argpartition(-scores, k - 1)[:k]
        scores, handles = scores[part], handles[part]
    order = np.argsort(-scores, kind="stable")[spec.offset:k]
    return render_handles(view, handles[order].tolist(), spec.with_payload, spec.with_vector,
                          scores[order].tolist())
