"""Read paths: search (query), scroll, count, retrieve — and how points are rendered.

Each read takes a consistent view of the segment list and row counts under the write lock
(microseconds), then computes without it. Filters become per-segment masks; vectors are
scored by gpu.flat (one GEMM per segment per query batch, masked top-k); per-segment
results merge on the host; payloads and vectors are looked up for the final k only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import ann
from engine import payload as payload_ops
from engine.columns import KIND_FLOAT, KIND_INT, KIND_STR, Column, ColumnData
from engine.errors import BadInput, BadRequest, NotFound
from engine.filters import Predicate, parse_filter
from engine.ids import PointId, id_order_key, ids_to_records, parse_id
from engine.plan import SearchSpec
from engine.segment import Segment
from gpu import flat
from gpu.topk import merge
from gpu.xp import DeviceFailure, is_device_array

if TYPE_CHECKING:
    from engine.collection import Collection

ROW_BITS = 32
ROW_MASK = (1 << ROW_BITS) - 1


# ---- filter tables ----------------------------------------------------------------------------


class SegmentTable:
    """A segment's first `n` rows as a FilterTable."""

    def __init__(self, coll: Collection, seg: Segment, n: int) -> None:
        self.coll, self.seg, self.n = coll, seg, n

    def column(self, path: str) -> ColumnData:
        return self.seg.column(path)

    def nested(self, path: str) -> tuple[Any, np.ndarray]:
        elems, parents = self.seg.nested_elements(path, self.n)
        return ElementTable(elems, self.coll), parents

    def id_rows(self, ids: list[PointId]) -> np.ndarray:
        sid = self.seg.seg_id
        if self.coll.seg_by_id.get(sid) is not self.seg:
            # the segment was swapped by a vacuum after this view was taken: match by value
            want = ids_to_records(ids)
            rows = np.flatnonzero(np.isin(self.seg.id_recs[: self.n], want))
            return rows[~self.seg.deleted[rows]]
        hs = [h for h in (self.coll.id_map.get(i) for i in ids)
              if h is not None and h >> ROW_BITS == sid]
        rows = np.array(hs, dtype=np.int64) & ROW_MASK
        return rows[rows < self.n]

    def vector_mask(self, name: str) -> np.ndarray:
        p = self.seg.present.get(name)
        return p[: self.n].copy() if p is not None else np.zeros(self.n, dtype=bool)

    def index_type(self, path: str) -> str | None:
        return self.coll.index_type(path)


class ElementTable:
    """Array elements under a `nested` key, one row per dict element (built per payload version)."""

    def __init__(self, elems: list[dict[str, Any]], coll: Collection) -> None:
        self.elems = elems
        self.n = len(elems)
        self.coll = coll
        self._cols: dict[str, Column] = {}

    payload_version = 0

    def payload_rows(self) -> int:
        return self.n

    def payload_at(self, row: int) -> dict[str, Any]:
        return self.elems[row]

    def payload_changes_since(self, version: int) -> np.ndarray | None:
        return np.empty(0, np.int64)

    def column(self, path: str) -> ColumnData:
        col = self._cols.get(path)
        if col is None:
            col = self._cols[path] = Column(path)
        return col.sync(self)

    def nested(self, path: str) -> tuple[Any, np.ndarray]:
        elems: list[dict[str, Any]] = []
        parents: list[int] = []
        for row, e in enumerate(self.elems):
            for v in payload_ops.raw_values_at(e, path):
                if isinstance(v, list):
                    for x in v:
                        if isinstance(x, dict):
                            elems.append(x)
                            parents.append(row)
        return ElementTable(elems, self.coll), np.array(parents, dtype=np.int64)

    def id_rows(self, ids: list[PointId]) -> np.ndarray:
        return np.empty(0, np.int64)  # has_id never matches inside `nested` (as in Qdrant)

    def vector_mask(self, name: str) -> np.ndarray:
        return np.zeros(self.n, dtype=bool)

    def index_type(self, path: str) -> str | None:
        return None


@dataclass
class View:
    """The segment list and row counts at one instant. Results render through `by_id`, so a
    segment replaced by a vacuum meanwhile is still the one the handles point into."""

    segments: list[tuple[Segment, int]]
    by_id: dict[int, Segment]


def take_view(coll: Collection) -> View:
    with coll.write_lock:
        return View([(s, s.n) for s in coll.segments], dict(coll.seg_by_id))


def _resolve(coll: Collection, ids: list[PointId]) -> tuple[list[int], dict[int, Segment]]:
    """ids → handles of existing points, plus the segments they live in (one consistent read)."""
    with coll.write_lock:
        handles = [h for h in (coll.id_map.get(i) for i in ids) if h is not None]
        return handles, dict(coll.seg_by_id)


def segment_mask(coll: Collection, seg: Segment, n: int, pred: Predicate | None,
                 vector: str | None = None) -> np.ndarray:
    """Rows passing deletion, vector presence and the filter (read-only: may be cached)."""
    return segment_mask_count(coll, seg, n, pred, vector)[0]


def segment_mask_count(coll: Collection, seg: Segment, n: int, pred: Predicate | None,
                       vector: str | None = None, cache_key: str = ""
                       ) -> tuple[np.ndarray, int]:
    """(read-only mask, allowed rows). With `cache_key` (the filter's canonical JSON) the
    result is remembered per segment until rows, deletions, payloads or payload indexes
    change: a filter repeated across queries (a tenant, a category) is evaluated once."""
    mask, allowed = seg.live_mask(n, vector)
    if pred is None or not allowed:
        return mask, allowed
    key = None
    if cache_key:
        schema = tuple(sorted((f, str(e.get("type"))) for f, e in coll.payload_schema.items()))
        key = (cache_key, vector, n, seg.mask_version, seg.payload_version, schema)
        hit = seg.filter_cache.get(key)
        if hit is not None:
            return hit
    mask = mask & pred(SegmentTable(coll, seg, n))
    mask.setflags(write=False)
    result = (mask, int(np.count_nonzero(mask)))
    if key is not None:
        seg.remember_filter(key, result)
    return result


def filtered_ids(coll: Collection, pred: Predicate | None) -> list[PointId]:
    out: list[PointId] = []
    for seg, n in take_view(coll).segments:
        rows = np.flatnonzero(segment_mask(coll, seg, n, pred))
        out.extend(seg.ids[r] for r in rows.tolist())
    return out


# ---- rendering --------------------------------------------------------------------------------


def _with_vector_names(coll: Collection, selector: Any) -> list[str] | None:
    if selector is None or selector is False:
        return None
    if selector is True:
        return list(coll.config.vectors)
    if isinstance(selector, list) and all(isinstance(n, str) for n in selector):
        return [n for n in selector if n in coll.config.vectors]
    raise BadRequest(f"invalid with_vector selector: {selector!r}")


def render(coll: Collection, seg: Segment, rows: list[int], with_payload: Any,
           with_vector: Any, scores: list[float] | None = None) -> list[dict[str, Any]]:
    names = _with_vector_names(coll, with_vector)
    out: list[dict[str, Any]] = []
    vecs: dict[str, list[Any]] = {}
    if names:
        r = np.asarray(rows, dtype=np.int64)
        for name in names:
            present = seg.present[name][r] if len(r) else np.zeros(0, bool)
            values = seg.vectors_of(name, r).tolist()
            vecs[name] = [v if p else None for v, p in zip(values, present.tolist(), strict=True)]
    bare = (with_vector is True and not coll.config.named)
    versions = seg.versions[np.asarray(rows, dtype=np.int64)].tolist() if rows else []
    if names is None and (with_payload is None or with_payload is False):
        ids = seg.ids
        if scores is None:
            return [{"id": ids[r]} for r in rows]
        return [{"id": ids[r], "version": ver, "score": sc}
                for r, ver, sc in zip(rows, versions, scores, strict=True)]
    for i, row in enumerate(rows):
        rec: dict[str, Any] = {"id": seg.ids[row]}
        if scores is not None:
            rec["version"] = versions[i]
            rec["score"] = scores[i]
        pl = payload_ops.select(seg.payloads[row], with_payload)
        if pl is not None:
            rec["payload"] = pl
        if names is not None:
            if bare:
                v = vecs[""][i]
                rec["vector"] = v if v is not None else {}
            else:
                rec["vector"] = {n: vecs[n][i] for n in names if vecs[n][i] is not None}
        out.append(rec)
    return out


def render_handles(coll: Collection, segs: dict[int, Segment], handles: list[int],
                   with_payload: Any, with_vector: Any,
                   scores: list[float] | None = None) -> list[dict[str, Any]]:
    """Render points given by handles, keeping their order."""
    if not handles:
        return []
    first = handles[0] >> ROW_BITS
    if all(h >> ROW_BITS == first for h in handles):  # the common case: one segment
        return render(coll, segs[first], [h & ROW_MASK for h in handles], with_payload,
                      with_vector, scores)
    out: list[dict[str, Any] | None] = [None] * len(handles)
    by_seg: dict[int, list[int]] = {}
    for i, h in enumerate(handles):
        by_seg.setdefault(h >> ROW_BITS, []).append(i)
    for sid, positions in by_seg.items():
        seg = segs[sid]
        rows = [handles[p] & ROW_MASK for p in positions]
        sc = [scores[p] for p in positions] if scores is not None else None
        for p, rec in zip(positions, render(coll, seg, rows, with_payload, with_vector, sc),
                          strict=True):
            out[p] = rec
    return [r for r in out if r is not None]


# ---- retrieve / count ---------------------------------------------------------------------


def retrieve(coll: Collection, ids: list[Any], with_payload: Any = True,
             with_vector: Any = False) -> list[dict[str, Any]]:
    parsed: list[PointId] = []
    for i in ids:
        try:
            parsed.append(parse_id(i))
        except BadRequest:
            continue
    handles, segs = _resolve(coll, parsed)
    return render_handles(coll, segs, handles, with_payload, with_vector)


def get_point(coll: Collection, raw_id: Any) -> dict[str, Any]:
    pid = parse_id(raw_id)
    handles, segs = _resolve(coll, [pid])
    if not handles:
        raise NotFound(f"No point with id {pid} found")
    return render_handles(coll, segs, handles, True, True)[0]


def count(coll: Collection, flt: Any) -> int:
    pred = parse_filter(flt)
    total = 0
    for seg, n in take_view(coll).segments:
        if pred is None:
            total += int(n - np.count_nonzero(seg.deleted[:n]))
        else:
            total += int(np.count_nonzero(segment_mask(coll, seg, n, pred)))
    return total


# ---- search -----------------------------------------------------------------------------------


def search(coll: Collection, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    """The entry point for requests: on a device-resident collection, concurrent requests are
    coalesced into batches (engine/coalesce.py); on the CPU each runs as it comes."""
    if any(seg.on_device for seg in coll.segments):
        return coll.coalescer.search(coll, specs)
    return search_batch(coll, specs)


def search_batch(coll: Collection, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    """Run many searches; those sharing vector name and filter go through one GEMM per segment."""
    results: list[list[dict[str, Any]] | None] = [None] * len(specs)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault((s.using, s.filter_key, s.hnsw_ef, s.exact), []).append(i)
    view = take_view(coll)
    for idx in groups.values():
        for i, res in zip(idx, _search_group(coll, view, [specs[i] for i in idx]), strict=True):
            results[i] = res
    return [r or [] for r in results]


def _search_group(coll: Collection, view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    spec0 = specs[0]
    vspec = coll.config.vector(spec0.using)
    dist = vspec.distance
    queries = _prepared_queries(specs, vspec.size, dist)
    k = max(s.limit + s.offset + len(s.exclude_ids) for s in specs)
    parts = []
    for seg, n in view.segments:
        if n == 0:
            continue
        mask, allowed = segment_mask_count(coll, seg, n, spec0.pred, vspec.name,
                                           spec0.filter_key)
        if allowed == 0:
            continue
        seg.touch()
        index = None if seg.on_device else seg.ann.get(vspec.name)
        row_bytes = seg.vectors[vspec.name].dtype.itemsize * vspec.size
        full_scan = int(coll.config.hnsw_config.get("full_scan_threshold") or 0) * 1024
        if ann.use_index(index, spec0.exact, allowed, n, full_scan // max(row_bytes, 1)):
            vals, rows = _index_search(seg, n, vspec.name, queries, k, dist.metric, mask, allowed,
                                       index, spec0.hnsw_ef or coll._hnsw()[1])
        else:
            try:
                vals, rows = _segment_search(seg, 0, n, vspec.name, queries, k, dist.metric,
                                             None if allowed == n else mask)
            except DeviceFailure as exc:
                coll.fall_back_to_cpu(str(exc))  # logged once; the same search runs on the host
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
            ex = {coll.id_map.get(e) for e in s.exclude_ids}
            pairs = [p for p in pairs if p[0] not in ex]
        pairs = pairs[s.offset : s.offset + s.limit]
        out.append(render_handles(coll, view.by_id, [h for h, _ in pairs], s.with_payload,
                                  s.with_vector, [sc for _, sc in pairs]))
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
    vectors = seg.vectors[name][start:n]
    norms = seg.sq_norms.get(name)
    if norms is not None and is_device_array(norms) != is_device_array(vectors):
        norms = None  # caught mid-move between host and device: recompute
    return flat.search(vectors, queries, k, metric, mask,
                       None if norms is None else norms[start:n])


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


def vector_of_point(coll: Collection, raw_id: Any, using: str) -> np.ndarray:
    pid = parse_id(raw_id)
    handles, segs = _resolve(coll, [pid])
    if not handles:
        raise NotFound(f"No point with id {pid} found")
    seg = segs[handles[0] >> ROW_BITS]
    row = handles[0] & ROW_MASK
    name = coll.config.vector(using).name
    if not seg.present[name][row]:
        raise BadInput(f"Vector with name {name!r} for point {pid} not found")
    return seg.vectors_of(name, np.array([row]))[0]


# ---- scroll -----------------------------------------------------------------------------------


def scroll(coll: Collection, flt: Any, limit: int, offset: Any, with_payload: Any,
           with_vector: Any, order_by: Any = None) -> tuple[list[dict[str, Any]], PointId | None]:
    pred = parse_filter(flt)
    if order_by is not None:
        if offset is not None:
            raise BadRequest("Offset is not supported in conjunction with `order_by` scroll parameter")
        return _scroll_ordered(coll, pred, limit, order_by, with_payload, with_vector), None
    start = id_order_key(parse_id(offset)) if offset is not None else None
    kinds, his, los, handles = [], [], [], []
    view = take_view(coll)
    for seg, n in view.segments:
        rows = np.flatnonzero(segment_mask(coll, seg, n, pred))
        if len(rows) == 0:
            continue
        rec = seg.id_recs[rows]
        kinds.append(rec["kind"])
        his.append(rec["hi"])
        los.append(rec["lo"])
        handles.append(rows + (seg.seg_id << ROW_BITS))
    if not handles:
        return [], None
    kind = np.concatenate(kinds)
    hi = np.concatenate(his)
    lo = np.concatenate(los)
    hs = np.concatenate(handles)
    if start is not None:
        sk, sv = start
        s_hi, s_lo = (0, sv) if sk == 0 else (sv >> 64, sv & ((1 << 64) - 1))
        ge = (kind > sk) | ((kind == sk) & ((hi > s_hi) | ((hi == s_hi) & (lo >= s_lo))))
        kind, hi, lo, hs = kind[ge], hi[ge], lo[ge], hs[ge]
    take = limit + 1
    if len(hs) > take * 4 and not kind.any():
        cand = np.argpartition(lo, take - 1)[:take]  # select, then sort only the page
        order = cand[np.argsort(lo[cand], kind="stable")]
    else:
        order = np.lexsort((lo, hi, kind))[:take]
    page = hs[order].tolist()
    nxt = None
    if len(page) > limit:
        last = page[limit]
        nxt = view.by_id[last >> ROW_BITS].ids[last & ROW_MASK]
        page = page[:limit]
    return render_handles(coll, view.by_id, page, with_payload, with_vector), nxt


def parse_order_by(order_by: Any) -> tuple[str, bool, float | None]:
    if isinstance(order_by, str):
        return order_by, False, None
    if not isinstance(order_by, dict) or not isinstance(order_by.get("key"), str):
        raise BadRequest("`order_by` needs a `key`")
    direction = order_by.get("direction") or "asc"
    if direction not in ("asc", "desc"):
        raise BadRequest("`order_by.direction` must be asc or desc")
    start = order_by.get("start_from")
    start_v = None
    if start is not None:
        if isinstance(start, int | float) and not isinstance(start, bool):
            start_v = float(start)
        elif isinstance(start, str):
            from engine.columns import parse_datetime  # noqa: PLC0415
            ts = parse_datetime(start)
            if np.isnan(ts):
                raise BadRequest(f"invalid `start_from`: {start!r}")
            start_v = ts * 1e6
        else:
            raise BadRequest("`start_from` must be a number or datetime")
    return order_by["key"], direction == "desc", start_v


def ordered_entries(coll: Collection, view: View, pred: Predicate | None, key: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One entry per numeric/datetime value of `key` on matching points:
    (values as float64, exact ints, is-integer flags, handles). Datetimes are microseconds."""
    vals, ints, is_int, hs = [], [], [], []
    for seg, n in view.segments:
        mask = segment_mask(coll, seg, n, pred)
        col = seg.column(key)
        ik = col.kinds == KIND_INT
        v = np.where(ik | (col.kinds == KIND_FLOAT), col.nums, np.nan)
        # secondary sort key: the exact int, or floor of a float (so 2 and 2.0 tie)
        floor = np.floor(np.nan_to_num(v, nan=0.0)).clip(-9.2e18, 9.2e18).astype(np.int64)
        exact = np.where(ik, col.ints, floor)
        is_str = col.kinds == KIND_STR
        if is_str.any():
            dates = col.vocab.datetimes()
            if len(dates):
                micros = dates[np.maximum(col.codes, 0)] * 1e6
                v = np.where(is_str, micros, v)
                ok_dt = is_str & ~np.isnan(micros)
                exact = np.where(ok_dt, np.nan_to_num(micros).round().astype(np.int64), exact)
                ik = ik | ok_dt
        rows = col.rows
        ok = ~np.isnan(v) & (rows < n)
        ok[ok] &= mask[rows[ok]]
        vals.append(v[ok])
        ints.append(exact[ok])
        is_int.append(ik[ok])
        hs.append(rows[ok] + (seg.seg_id << ROW_BITS))
    if not vals:
        empty = np.empty(0)
        return empty, empty.astype(np.int64), empty.astype(bool), empty.astype(np.int64)
    return np.concatenate(vals), np.concatenate(ints), np.concatenate(is_int), np.concatenate(hs)


def _scroll_ordered(coll: Collection, pred: Predicate | None, limit: int, order_by: Any,
                    with_payload: Any, with_vector: Any) -> list[dict[str, Any]]:
    key, desc, start = parse_order_by(order_by)
    view = take_view(coll)
    values, ints, is_int, hs = ordered_entries(coll, view, pred, key)
    if start is not None:
        keep = values <= start if desc else values >= start
        values, ints, is_int, hs = values[keep], ints[keep], is_int[keep], hs[keep]
    if len(hs):  # dedupe exact (value, point) pairs, keeping the first occurrence
        pairs = np.stack([values, ints.astype(np.float64), hs.astype(np.float64)])
        first = np.sort(np.unique(pairs, axis=1, return_index=True)[1])
        values, ints, is_int, hs = values[first], ints[first], is_int[first], hs[first]
    sign = -1 if desc else 1
    # by value, exact integers breaking float ties; equal values keep row order
    order = np.lexsort((hs, sign * ints, sign * values))[:limit]
    recs = render_handles(coll, view.by_id, hs[order].tolist(), with_payload, with_vector)
    for rec, v, i, exact in zip(recs, values[order].tolist(), ints[order].tolist(),
                                is_int[order].tolist(), strict=True):
        rec["order_value"] = i if exact else v
    return recs


def parse_limit(v: Any, default: int = 10) -> int:
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise BadRequest(f"limit value {v} is invalid. Must be 1 or larger.")
    return v


def parse_offset(v: Any) -> int:
    if v is None:
        return 0
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise BadRequest(f"offset value {v} is invalid. Must be 0 or larger.")
    return v

