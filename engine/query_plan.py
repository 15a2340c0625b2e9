"""Executing query plans: trees of QueryRequest nodes (engine/plan.py), bottom-up.

Nodes run in rounds by height, all requests of a batch together: every nearest search of a
round (the leaves of every tree first, then the re-scoring nodes above them) goes to
`coll.search` as one batch. A node with children runs its own query over the union of their
candidates — a nearest search (or scroll, order_by, sample) restricted to those ids AND the
node's filter — or fuses them (engine/fusion.py) or re-scores them with a formula
(engine/formula.py). Only the roots render payloads and vectors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from engine import fusion as _fusion
from engine import scroll as _scroll
from engine.filters import Predicate, parse_filter
from engine.id_tracker import ROW_BITS, ROW_MASK
from engine.ids import PointId
from engine.payload import raw_values_at
from engine.plan import QueryRequest, ScrollRequest, SearchSpec
from engine.render import render_handles
from engine.tables import SegmentTable, segment_mask
from engine.view import Readable, View


@dataclass
class Hits:
    """A node's result: ids in rank order with their scores; a root's rendered records."""

    ids: list[PointId]
    scores: np.ndarray  # float64
    records: list[dict[str, Any]] | None = None


def execute(coll: Readable, reqs: list[QueryRequest]) -> list[list[dict[str, Any]]]:
    if reqs and all(r.nearest is not None and not r.prefetch and r.mmr is None for r in reqs):
        # plain nearest searches (the common query): one round whose roots' records are the
        # search's own (_nearest_spec and _after_search change nothing), without the plan's
        # rounds, view and per-node hit lists (a tenth of a small query's engine time)
        return coll.search([r.nearest for r in reqs])
    rounds: dict[int, list[tuple[QueryRequest, bool]]] = {}

    def place(node: QueryRequest, root: bool) -> int:
        h = 1 + max((place(c, False) for c in node.prefetch), default=-1)
        rounds.setdefault(h, []).append((node, root))
        return h

    for r in reqs:
        place(r, True)
    done: dict[int, Hits] = {}
    for h in sorted(rounds):
        nodes = rounds[h]
        view = coll.view()
        searches: list[tuple[QueryRequest, bool, SearchSpec]] = []
        for node, root in nodes:
            children = [done[id(c)] for c in node.prefetch]
            if node.nearest is not None:
                spec = _nearest_spec(node, root, children)
                if spec is None:
                    done[id(node)] = Hits([], np.empty(0), [] if root else None)
                else:
                    searches.append((node, root, spec))
            else:
                done[id(node)] = _run_other(view, node, root, children)
        if searches:
            found = coll.search([s for _, _, s in searches])
            for (node, root, spec), recs in zip(searches, found, strict=True):
                done[id(node)] = _after_search(view, node, root, spec, recs)
    return [_records(done[id(r)]) for r in reqs]


def _records(h: Hits) -> list[dict[str, Any]]:
    return h.records if h.records is not None else []


def _hits(recs: list[dict[str, Any]], root: bool) -> Hits:
    return Hits([r["id"] for r in recs], np.array([r["score"] for r in recs], np.float64),
                recs if root else None)


def _candidates(children: list[Hits]) -> list[PointId]:
    return list(dict.fromkeys(i for c in children for i in c.ids))


def restricted(pred: Predicate | None, filter_key: str, ids: list[PointId]
               ) -> tuple[Predicate, str]:
    """`pred` AND has_id(ids), with a cache key naming both."""
    idp = parse_filter({"must": [{"has_id": ids}]})
    assert idp is not None
    both: Predicate = idp if pred is None else (lambda t: pred(t) & idp(t))
    return both, orjson.dumps({"filter": filter_key, "has_id": ids}).decode()


def _nearest_spec(node: QueryRequest, root: bool, children: list[Hits]) -> SearchSpec | None:
    """The search a nearest node runs (None: its children found nothing)."""
    spec = node.nearest
    assert spec is not None
    if node.prefetch:
        ids = _candidates(children)
        if not ids:
            return None
        pred, key = restricted(spec.pred, spec.filter_key, ids)
        spec = dataclasses.replace(spec, pred=pred, filter_key=key)
    if node.mmr is not None:  # candidates first; MMR picks from them, offset applied after
        spec = dataclasses.replace(spec, limit=node.mmr.candidates_limit or node.limit,
                                   offset=0, with_payload=False, with_vector=False)
    return spec


def _after_search(view: View, node: QueryRequest, root: bool, spec: SearchSpec,
                  recs: list[dict[str, Any]]) -> Hits:
    if node.mmr is None:
        return _hits(recs, root)
    ids = [r["id"] for r in recs]
    scores = np.array([r["score"] for r in recs], np.float64)
    picked = mmr_order(view, spec, ids, node.mmr.diversity, node.limit + node.offset)
    order = np.array(picked[node.offset:] if root else picked, np.int64)
    hits = Hits([ids[i] for i in order.tolist()], scores[order])
    return _render(view, hits, node) if root else hits


def _run_other(view: View, node: QueryRequest, root: bool,
               children: list[Hits]) -> Hits:
    """Nodes that need no vector search: fusion, formula, order_by, sample, no query."""
    lim = node.limit + (node.offset if root else 0)
    if node.fusion is not None or node.formula is not None:
        lists = [(c.ids, c.scores) for c in children]
        if node.fusion is not None:
            f = node.fusion
            ids, scores = (_fusion.rrf(lists, lim, f.k, f.weights) if f.method == "rrf"
                           else _fusion.dbsf(lists, lim))
        else:
            ids, scores = _formula(view, node, lists, lim)
        if node.score_threshold is not None:  # fusion and formula: inclusive, as Qdrant
            keep = scores >= node.score_threshold
            ids = [i for i, k in zip(ids, keep.tolist(), strict=True) if k]
            scores = scores[keep]
        hits = Hits(ids, scores)
        if root:
            hits = Hits(ids[node.offset:], scores[node.offset:])
            return _render(view, hits, node)
        return hits
    pred = node.pred
    if node.prefetch:
        ids = _candidates(children)
        if not ids:
            return Hits([], np.empty(0), [] if root else None)
        pred, _ = restricted(pred, node.filter_key, ids)
    wp, wv = (node.with_payload, node.with_vector) if root else (False, False)
    if node.sample:
        return _sample(view, pred, node.limit, wp, wv, root)
    req = ScrollRequest(pred, lim, None, wp, wv, node.order_by)
    points, _ = _scroll.scroll(view, req)
    points = points[node.offset:] if root else points
    recs = []
    for p in points:
        rec = {"id": p["id"], "version": 0, "score": 1.0}
        rec.update((k, p[k]) for k in ("payload", "vector", "order_value") if k in p)
        recs.append(rec)
    return _hits(recs, root)


def _handles(view: View, ids: list[PointId]) -> tuple[list[int], list[int]]:
    """(handles of the ids still present, their positions in `ids`)."""
    get, segs = view.ids.get, view.by_id
    hs, pos = [], []
    for i, pid in enumerate(ids):
        h = get(pid)
        if h is not None and h >> ROW_BITS in segs:  # not written after this view began
            hs.append(h)
            pos.append(i)
    return hs, pos


def _render(view: View, hits: Hits, node: QueryRequest) -> Hits:
    hs, pos = _handles(view, hits.ids)
    scores = hits.scores[pos].tolist()
    hits.records = render_handles(view, hs, node.with_payload, node.with_vector, scores)
    return hits


def _sample(view: View, pred: Predicate | None, limit: int, wp: Any, wv: Any,
            root: bool) -> Hits:
    handles = [np.flatnonzero(segment_mask(view, seg, n, pred)) + (seg.seg_id << ROW_BITS)
               for seg, n in view.segments]
    allh = np.concatenate(handles) if handles else np.empty(0, np.int64)
    pick = np.random.default_rng().permutation(len(allh))[:limit]
    chosen = allh[pick].tolist()
    recs = render_handles(view, chosen, wp, wv, [1.0] * len(chosen))
    return _hits(recs, root)


# ---- formula ----------------------------------------------------------------------------------


class _FormulaInputs:
    def __init__(self, view: View, handles: np.ndarray, lists: list[_fusion.Ranked],
                 positions: list[np.ndarray]) -> None:
        self.view, self.handles = view, handles
        self.n = len(handles)
        self.lists, self.positions = lists, positions
        self._values: dict[str, list[list[Any]]] = {}
        self.visible = {seg.seg_id: n for seg, n in view.segments}

    def scores(self, i: int) -> np.ndarray:
        out = np.full(self.n, np.nan)
        if i < len(self.lists):
            out[self.positions[i]] = self.lists[i][1]
        return out

    def values(self, key: str) -> list[list[Any]]:
        got = self._values.get(key)
        if got is None:
            got = []
            by_id = self.view.by_id
            for h in self.handles.tolist():
                vals = raw_values_at(by_id[h >> ROW_BITS].payloads[h & ROW_MASK], key)
                flat: list[Any] = []
                for v in vals:  # arrays count as their elements, as Qdrant reads them
                    flat.extend(v) if isinstance(v, list) else flat.append(v)
                got.append([v for v in flat if v is not None])
            self._values[key] = got
        return got

    def condition(self, pred: Predicate) -> np.ndarray:
        out = np.zeros(self.n, bool)
        segs = self.handles >> ROW_BITS
        for sid in np.unique(segs).tolist():
            at = np.flatnonzero(segs == sid)
            seg = self.view.by_id[sid]
            rows = self.handles[at] & ROW_MASK
            n = max(self.visible.get(sid, 0), int(rows.max()) + 1)
            out[at] = pred(SegmentTable(self.view, seg, n))[rows]
        return out


def _formula(view: View, node: QueryRequest, lists: list[_fusion.Ranked], limit: int
             ) -> tuple[list[PointId], np.ndarray]:
    ids, positions = _fusion.union(lists)
    hs, pos = _handles(view, ids)
    if len(pos) < len(ids):  # points deleted meanwhile drop out
        remap = np.full(len(ids), -1, np.int64)
        remap[pos] = np.arange(len(pos))
        keep = [remap[p] >= 0 for p in positions]
        lists = [(lst[0], lst[1][k]) for lst, k in zip(lists, keep, strict=True)]
        positions = [remap[p][k] for p, k in zip(positions, keep, strict=True)]
        ids = [ids[i] for i in pos]
    inputs = _FormulaInputs(view, np.array(hs, np.int64), lists, positions)
    scores = node.formula.evaluate(inputs).astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:limit]
    return [ids[i] for i in order.tolist()], scores[order]


# ---- maximal marginal relevance ---------------------------------------------------------------


def _similarities(dist_metric: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Qdrant's internal similarity (higher is better) of each row of `b` to vector `a`."""
    if dist_metric == "ip":
        return b @ a
    if dist_metric == "l2":
        return -np.square(b - a).sum(axis=1)
    return -np.abs(b - a).sum(axis=1)


def mmr_order(view: View, spec: SearchSpec, ids: list[PointId], diversity: float,
              limit: int) -> list[int]:
    """Positions of `ids` in MMR order (at most `limit`), as Qdrant picks them: start from
    the most relevant, then repeatedly the candidate maximising
    (1 - diversity) * sim(query) - diversity * max sim(already selected); ties go to the last
    maximum over the pending list, which is kept with swap-remove (core's IndexSet)."""
    if not ids:
        return []
    vspec = view.config.vector(spec.using)
    hs, pos = _handles(view, ids)
    vectors = np.zeros((len(ids), vspec.size), np.float32)
    harr = np.array(hs, np.int64)
    parr = np.array(pos, np.int64)
    for sid in np.unique(harr >> ROW_BITS).tolist():
        at = np.flatnonzero((harr >> ROW_BITS) == sid)
        vectors[parr[at]] = view.by_id[sid].vectors_of(vspec.name, harr[at] & ROW_MASK)
    q = np.asarray(spec.vector, np.float32).reshape(1, -1)
    q = vspec.distance.prepare(q)[0].astype(np.float32)
    metric = vspec.distance.metric
    rel = _similarities(metric, q, vectors)
    lam = 1.0 - diversity
    pending = list(range(len(ids)))
    max_sim = np.full(len(ids), -np.inf, np.float32)

    def take(values: np.ndarray) -> int:
        at = len(values) - 1 - int(np.argmax(values[::-1]))  # the last maximum
        chosen = pending[at]
        pending[at] = pending[-1]
        pending.pop()
        return chosen

    selected = [take(rel[pending])]
    while len(selected) < limit and pending:
        max_sim = np.maximum(max_sim, _similarities(metric, vectors[selected[-1]], vectors))
        idx = np.array(pending, np.int64)
        scores = lam * rel[idx] - (1.0 - lam) * max_sim[idx]
        if np.isneginf(scores).all():
            break
        selected.append(take(scores))
    return selected
