"""Vector search over a view: one GEMM per segment per query batch, masked top-k, merged.

Searches sharing vector name, filter and index params go through one batch per segment;
segments with an HNSW index are searched through it (exactly over the unindexed tail);
per-segment results merge on the host; payloads and vectors are rendered for the final k.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from engine import ann, ivf, quantized_search
from engine.errors import BadInput
from engine.id_tracker import ROW_BITS, ROW_MASK
from engine.multi_search import search_multi
from engine.multivector import MultiVector
from engine.plan import SearchSpec
from engine.recommend import ExampleQuery, search_examples
from engine.render import plain_records, plain_selectors, render, render_handles
from engine.segment import Segment
from engine.sparse import SparseVector
from engine.sparse_search import search_sparse
from engine.tables import index_rows, rows_mask, selected_segments
from engine.view import View
from gpu import flat
from gpu.device import DeviceFailure
from gpu.topk import merge

# engine/_records.c and gpu/_rows.c (built by setup.py where a C compiler is found): the
# records, ranking and query preparation of the single-query paths in C
try:
    from engine import _records
except ImportError:  # pragma: no cover - installed without a C compiler
    _records = None  # type: ignore[assignment]
try:
    from gpu import _rows
except ImportError:  # pragma: no cover - installed without a C compiler
    _rows = None  # type: ignore[assignment]


def search_batch(view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    """Run many searches; those sharing vector name and filter go through one GEMM per segment."""
    if len(specs) == 1:
        one = _tiny_one(view, specs[0])
        if one is None:
            one = _search_one(view, specs[0])
        if one is None:
            one = _exact_one(view, specs[0])
        if one is not None:
            return [one]
    if not specs:
        return []
    if _one_group(specs):
        return _search_group(view, specs)  # one dense group, the common batch, in one pass
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


def _one_group(specs: list[SearchSpec]) -> bool:
    """Every spec a dense array searching one vector name with one filter and params (a
    plain loop: half the time of a generator over tuples, which cost ~75 us of a 500-query
    batch with the server's cold caches)."""
    s0 = specs[0]
    using, filter_key, ef, exact = s0.using, s0.filter_key, s0.hnsw_ef, s0.exact
    for s in specs:
        if type(s.vector) is not np.ndarray or s.using != using or s.filter_key != filter_key \
                or s.hnsw_ef != ef or s.exact != exact:
            return False
    return True


def _search_group(view: View, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    spec0 = specs[0]
    vspec = view.config.vector(spec0.using)
    dist = vspec.distance
    queries = _prepared_queries(specs, vspec.size, dist)
    k = max(s.limit + s.offset + len(s.exclude_ids) for s in specs)
    stream = _ChunkRecords.of(view, specs, vspec.name, dist)
    parts = []
    for seg, n, mask, listed, allowed in selected_segments(view, spec0.pred, vspec.name,
                                                          spec0.filter_key):
        # listed: a selective filter's rows from payload indexes (mask None: none was built)
        if (quant := quantized_search.applies(seg, vspec.name, specs)) is not None:
            vals, rows = quantized_search.search(view, seg, n, vspec.name, queries, k,
                                                 dist.metric, _as_mask(mask, listed, n), allowed,
                                                 quant, specs)
            parts.append((vals, rows + (seg.seg_id << ROW_BITS)))  # codes, then rescore
            continue
        index = seg.ann.get(vspec.name)
        if seg.on_device and not isinstance(index, ivf.IvfIndex):
            index = None  # device segments: exact on the GPU unless a FAISS index serves them
        if index is not None and ann.use_index(index, spec0.exact, allowed, n, ann.full_scan_rows(
                view.config.hnsw_config, seg.row_bytes(vspec.name))):
            vals, rows = _index_search(seg, n, vspec.name, queries, k, dist.metric,
                                       _as_mask(mask, listed, n), allowed, index,
                                       spec0.hnsw_ef or view.hnsw_ef_construct(),
                                       stream if stream is not None and stream.seg is seg
                                       else None)
        else:
            # listed rows are scored as they are: gathered, one small GEMM, no mask
            sel = listed if mask is None else None if allowed == n else mask
            try:
                vals, rows = _segment_search(seg, 0, n, vspec.name, queries, k, dist.metric, sel)
            except DeviceFailure as exc:
                view.on_device_failure(str(exc))  # logged once; the same search runs on the host
                vals, rows = _segment_search(seg, 0, n, vspec.name, queries, k, dist.metric, sel)
        # a missing result carries -inf (and row -1): the finite check below drops it
        parts.append((vals, rows + (seg.seg_id << ROW_BITS)))
    if stream is not None and (done := stream.result()) is not None:
        return done  # built while the graph walk went on (the sole segment's every hit)
    vals, keys = merge(parts, k) if parts else (np.empty((len(specs), 0), np.float32),
                                                 np.empty((len(specs), 0), np.int64))
    # one pass for the whole batch: drop misses, apply thresholds, convert to Python once
    ok = np.isfinite(vals) & (keys >= 0)
    thresholds = [s.score_threshold for s in specs]
    if any(t is not None for t in thresholds):
        limits = np.array([-np.inf if t is None else dist.threshold_to_sim(t)
                           for t in thresholds], np.float64)
        ok &= vals > limits[:, None]  # strict, as Qdrant
    scores = dist.to_score(vals.astype(np.float64))
    fast = _one_segment_batch(view, keys, ok, scores, specs)
    if fast is not None:
        return fast
    scores_all = scores.tolist()
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


def _one_segment_batch(view: View, keys: np.ndarray, ok: np.ndarray, scores: np.ndarray,
                       specs: list[SearchSpec]) -> list[list[dict[str, Any]]] | None:
    """A batch's records when every hit is kept (no misses, thresholds or exclusions) and
    all lie in one segment: rows, versions and ids converted once for the whole (b, k)
    matrix, not per query (the per-query lists and render set-up were a fifth of a
    1000-query HNSW batch, cProfile). None: the general per-query loop decides."""
    if not keys.size or any(s.exclude_ids for s in specs) or not ok.all():
        return None
    seg_ids = keys >> ROW_BITS
    first = int(seg_ids.flat[0])
    if not (seg_ids == first).all():
        return None
    seg = view.by_id[first]
    rows = keys & ROW_MASK
    plain = all(plain_selectors(s.with_payload, s.with_vector) for s in specs)
    if plain and all(s.offset == 0 and s.limit >= keys.shape[1] for s in specs):
        return plain_records(seg, rows, scores)  # no paging: the whole matrix at once
    rows_all, scores_all = rows.tolist(), scores.tolist()
    if plain:
        ids, versions = seg.ids, seg.versions[rows].tolist()
        return [[{"id": ids[r], "version": ver, "score": sc}
                 for r, ver, sc in zip(rows_q[s.offset : s.offset + s.limit],
                                       vers_q[s.offset : s.offset + s.limit],
                                       sc_q[s.offset : s.offset + s.limit], strict=True)]
                for s, rows_q, vers_q, sc_q in zip(specs, rows_all, versions, scores_all,
                                                   strict=True)]
    return [render(view, seg, rows_q[s.offset : s.offset + s.limit], s.with_payload,
                   s.with_vector, sc_q[s.offset : s.offset + s.limit])
            for s, rows_q, sc_q in zip(specs, rows_all, scores_all, strict=True)]


class _ChunkRecords:
    """A plain batch's records, built chunk by chunk while its graph walk goes on
    (HnswIndex.search `on_chunk`): what `_one_segment_batch` gives when one segment holds
    every hit, without the wait. After the walk the records took ~1.7 of a 500-query
    batch's ~16 ms (ef 32, bench.ann) on one core while the other sat idle."""

    def __init__(self, seg: Segment, m: int, negate: bool, limit: int) -> None:
        self.seg, self.negate, self.limit = seg, negate, limit
        self.out: list[list[dict[str, Any]] | None] = [None] * m
        self.fed = 0
        self.whole = True  # every chunk so far had all its hits, finite

    @classmethod
    def of(cls, view: View, specs: list[SearchSpec], name: str, dist: Any
           ) -> _ChunkRecords | None:
        """One for a batch whose records `_one_segment_batch` would build with
        `plain_records` (plain selectors, no offset, exclusion or threshold) over a sole
        host segment with an HNSW index; None otherwise (and for small batches, walked in
        one piece)."""
        if _records is None or len(specs) < 8:
            return None
        seg, _ = _sole_segment(view)
        if seg is None or type(seg.ann.get(name)) is not ann.HnswIndex \
                or type(seg.ids) is not list or seg.versions.dtype is not _U64:
            return None
        for s in specs:  # plain_selectors inline: a loop of 500 ran ~0.1 ms cold otherwise
            wp, wv = s.with_payload, s.with_vector
            if s.offset or s.exclude_ids or s.score_threshold is not None \
                    or not (wp is None or wp is False) or not (wv is None or wv is False):
                return None
        return cls(seg, len(specs), not dist.higher_is_better, min(s.limit for s in specs))

    def __call__(self, a: int, b: int, sims: np.ndarray, rows: np.ndarray) -> None:
        self.fed += b - a
        if not self.whole:
            return
        # a missing hit (-1) or an overflowed score: the general path drops it per query
        if rows.shape[1] > self.limit or rows.min() < 0 or not np.isfinite(sims).all():
            self.whole = False
            return
        scores = sims.astype(np.float64)  # exact: the floats tolist() would give
        if self.negate:
            np.negative(scores, out=scores)
        self.out[a:b] = _records.records(self.seg.ids, self.seg.versions, rows, scores)

    def result(self) -> list[list[dict[str, Any]]] | None:
        """The records if every query's were built; None: the general path decides."""
        return self.out if self.whole and self.fed == len(self.out) else None  # type: ignore[return-value]


def _as_mask(mask: np.ndarray | None, listed: np.ndarray | None, n: int) -> np.ndarray:
    return rows_mask(listed, n) if mask is None else mask  # type: ignore[arg-type]


# the indexes `_search_one` takes: their search_one gives one query's (k,) sims and rows
_ONE_QUERY_INDEXES = (ann.HnswIndex, ivf.IvfIndex)


def _search_one(view: View, s: SearchSpec) -> list[dict[str, Any]] | None:
    """The common single query, straight from the spec to the index: a dense vector, no
    filter (a filtered one: `_listed_one`) or exclusions, one non-empty host segment wholly
    covered by its HNSW or IVF index and without deleted rows. None: the general path
    decides (same results, more Python: view scans, masks, merge and per-query lists cost
    as much as a small graph walk, py-spy)."""
    v = s.vector
    if type(v) is not np.ndarray or v.ndim != 1 or s.exclude_ids:
        return None
    if s.pred is not None:
        return _listed_one(view, s, v)
    if s.exact:
        return None
    seg, n = _sole_segment(view)
    k = s.limit + s.offset
    if seg is None or k <= 0 or seg.on_device:
        return None
    vspec = view.config.vector(s.using)
    index = seg.ann.get(vspec.name)
    if index is None or type(index) not in _ONE_QUERY_INDEXES or index.rows != n \
            or quantized_search.applies(seg, vspec.name, [s]) is not None:
        return None
    if seg.live_mask(n, vspec.name)[1] != n:
        return None
    dist = vspec.distance
    q = _prepared_one(v, vspec.size, dist)
    sims, rows = index.search_one(q, k, s.hnsw_ef or view.hnsw_ef_construct())
    seg.touch()
    plain = plain_selectors(s.with_payload, s.with_vector)
    if plain and s.score_threshold is None and _records is not None \
            and type(seg.ids) is list and seg.versions.dtype is _U64:
        # the steps below for this common case in one C call (they ran cold after the walk);
        # it drops missing hits and scores that are not finite, as the batch path does
        return _records.hits(seg.ids, seg.versions, rows, sims, not dist.higher_is_better,
                             s.offset)
    if rows.min() < 0 or s.score_threshold is not None or not np.isfinite(sims).all():
        sims64 = sims.astype(np.float64)
        ok = np.isfinite(sims64) & (rows >= 0)
        if s.score_threshold is not None:
            ok &= sims64 > dist.threshold_to_sim(s.score_threshold)  # strict, as Qdrant
        sims, rows = sims[ok], rows[ok]
    if s.offset:
        sims, rows = sims[s.offset :], rows[s.offset :]
    if plain:
        # float32 -> float64 is exact: the floats tolist() would give; copied out of the
        # thread's walk buffers before the next search reuses them
        scores64 = sims.astype(np.float64) if dist.higher_is_better else -sims.astype(np.float64)
        return plain_records(seg, rows[None, :], scores64[None, :])[0]
    scores = (sims if dist.higher_is_better else -sims).tolist()
    return render(view, seg, rows, s.with_payload, s.with_vector, scores)


def _listed_one(view: View, s: SearchSpec, v: np.ndarray) -> list[dict[str, Any]] | None:
    """One dense query whose filter every host segment answers from its payload indexes
    with a selection small enough to scan exactly (engine/tables.index_rows; what
    qdrant-edge does below its full-scan threshold): gather, one GEMV, a 1-D top-k. The
    same records as `_search_group`, without its 2-D set-up, masks and per-batch passes
    (those numpy calls were most of a 0.1 % filtered query, py-spy). None: the general
    path decides (device or quantized segments, a filter the indexes cannot list, one
    the graph should serve)."""
    def listed(seg: Segment, n: int, name: str) -> tuple[np.ndarray | None, int] | None:
        rows = index_rows(view, seg, n, s.pred, name)
        return None if rows is None else (rows, len(rows))
    return _direct_one(view, s, v, listed)


def _prepared_one(v: np.ndarray, dim: int, dist: Any) -> np.ndarray:
    """One (d,) query as searched: checked (dimension, finite) and, for Cosine, a unit copy
    (gpu/_rows.c `unit`: the norm from a double sum of squares, rounded to float32; every
    single-query path prepares its query here, so they all score the same bits)."""
    q = v if v.dtype is _F32 and v.flags.c_contiguous else \
        np.ascontiguousarray(v, dtype=np.float32)
    if len(q) != dim:
        raise BadInput(f"Vector dimension error: expected dim: {dim}, got {len(q)}")
    if _rows is not None:
        out = _rows.unit(q, dist.normalise)
        if out is None:
            raise BadInput("Query vector must not contain NaN or infinite values")
        return out
    # without the C module: the same steps in numpy (a double sum of squares, a float32
    # norm, a float32 division; inf: zeros)
    q64 = q.astype(np.float64)
    sq = float(q64 @ q64)
    if not math.isfinite(sq):
        raise BadInput("Query vector must not contain NaN or infinite values")
    if not dist.normalise:
        return q
    with np.errstate(over="ignore"):  # a norm beyond float32: inf, and zeros below
        norm = np.float32(math.sqrt(sq))
    return q / norm if norm else q.copy()


def _prepared_queries(specs: list[SearchSpec], dim: int, dist: Any) -> np.ndarray:
    """(b, d) float32 queries, checked (dimension, finite) and prepared (Cosine: unit)."""
    v = specs[0].vector
    if len(specs) == 1 and type(v) is np.ndarray and v.ndim == 1:
        return _prepared_one(v, dim, dist)[None, :]
    vectors = [s.vector for s in specs]
    if _rows is not None and len(specs) > 1:  # float32 arrays of the right size: one C pass
        out = np.empty((len(vectors), dim), np.float32)
        done = _rows.gather_units(vectors, out, dist.normalise)
        if done is not None:
            if not done:
                raise BadInput("Query vector must not contain NaN or infinite values")
            return out
    if len(specs) == 1:
        queries = np.asarray(vectors[0], dtype=np.float32).reshape(1, -1)
    else:
        # np.array rather than np.stack: the same (b, d) rows in a third of the time (np.stack
        # reshapes each row first: 0.14 ms for 500); rows of mixed sizes: a ValueError
        try:
            queries = np.array(vectors).astype(np.float32, copy=False)
        except ValueError:
            queries = np.empty((0, 0), np.float32)
        if queries.ndim != 2:
            queries = np.empty((0, 0), np.float32)
    if queries.shape[1] != dim:  # the first vector of another size, as Qdrant names it
        got = next((np.size(v) for v in vectors if np.size(v) != dim), queries.shape[1])
        raise BadInput(f"Vector dimension error: expected dim: {dim}, got {got}")
    if _rows is not None:  # gpu/_rows.c: `unit`'s steps for every row, so the same bits
        unit_rows = np.empty_like(queries) if dist.normalise else None
        if not _rows.units(np.ascontiguousarray(queries), unit_rows):
            raise BadInput("Query vector must not contain NaN or infinite values")
        return queries if unit_rows is None else unit_rows
    # without the C module: double sums of squares (never overflowing), the float32 norms
    # `_prepared_one` takes, so a query is prepared to the same bits alone or in a batch
    q64 = queries.astype(np.float64)
    sq = np.einsum("ij,ij->i", q64, q64)
    if not np.isfinite(sq).all():
        raise BadInput("Query vector must not contain NaN or infinite values")
    if not dist.normalise:
        return queries
    with np.errstate(over="ignore"):  # a norm beyond float32: inf, and zeros below
        norms = np.sqrt(sq).astype(np.float32)
    norms[norms == 0] = 1.0  # a zero vector stays zero
    return queries / norms[:, None]


def _segment_search(seg: Segment, start: int, n: int, name: str, queries: np.ndarray, k: int,
                    metric: str, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact search over rows [start, n) of a segment; returned rows count from `start`.
    `mask`: bools over those rows, or the allowed rows themselves (ascending int64)."""
    return seg.search(name, start, n, queries, k, metric, mask)


def _index_search(seg: Segment, n: int, name: str, queries: np.ndarray, k: int, metric: str,
                  mask: np.ndarray, allowed: int, index: ann.HnswIndex, ef: int,
                  on_chunk: ann.OnChunk | None = None) -> tuple[np.ndarray, np.ndarray]:
    """HNSW over the indexed rows, exact scan of the unindexed tail, merged. `on_chunk`
    sees the walk's results only where they are the segment's (no mask, no tail)."""
    covered = min(index.rows, n)
    sel = None
    if allowed < n or index.rows > n:  # rows appended after this view began are not visible
        sel = np.zeros(index.rows, bool)
        sel[:covered] = mask[:covered]
        ef = ann.filtered_ef(ef, allowed, n)
    if on_chunk is not None and sel is None and covered == n \
            and isinstance(index, ann.HnswIndex):  # IVF indexes take no on_chunk
        vals, rows = index.search(queries, k, ef, None, on_chunk)
    else:
        vals, rows = index.search(queries, k, ef, sel)
    if covered < n:
        tail = mask[covered:n]
        tv, tr = _segment_search(seg, covered, n, name, queries, k, metric,
                                 None if tail.all() else tail)
        tr = np.where(tr >= 0, tr + covered, -1)
        vals, rows = merge([(vals, rows), (tv, tr)], k)
    return vals, rows


def _exact_one(view: View, s: SearchSpec) -> list[dict[str, Any]] | None:
    """One unfiltered dense query over host segments that no index serves (a small or fresh
    collection): per segment one GEMV and a 1-D top-k (gpu.flat.search_one, the selection
    gpu.flat.search makes), merged as gpu.topk.merge merges. The records `_search_group`
    gives, without its batch set-up: on a 10-point collection its 2-D top-k, masks, merge
    and per-batch passes were ~60 % of the query handler (cProfile, bench/overhead.py).
    None: the general path decides (filters, exclusions, L1 (faiss scans it unmasked),
    device, quantized or indexed segments, deletions it would mask rather than gather)."""
    v = s.vector
    if type(v) is not np.ndarray or v.ndim != 1 or s.pred is not None or s.exclude_ids \
            or view.config.vector(s.using).distance.metric == "l1":
        return None

    def live(seg: Segment, n: int, name: str) -> tuple[np.ndarray | None, int] | None:
        mask, allowed = seg.live_mask(n, name)
        if allowed == n:
            return None, n
        # gpu.flat.search gathers the live rows below this fraction and masks above it
        return (np.flatnonzero(mask), allowed) if allowed < n * flat.GATHER_FRACTION else None
    return _direct_one(view, s, v, live)


def _direct_one(view: View, s: SearchSpec, v: np.ndarray,
                rows_of: Callable[[Segment, int, str], tuple[np.ndarray | None, int] | None]
                ) -> list[dict[str, Any]] | None:
    """The direct paths' shared steps: every non-empty host segment's rows to score
    (`rows_of`: (ascending rows, or None for all n; how many), or None to decline), unless
    the segment's index should serve that many; then each scored exactly and the results
    merged and rendered. None: the general path decides (device or quantized segments, a
    `rows_of` that declines, an index that serves)."""
    k = s.limit + s.offset
    if k <= 0:
        return None
    vspec = view.config.vector(s.using)
    name, dist = vspec.name, vspec.distance
    full_scan: int | None = None
    chosen: list[tuple[Segment, int, np.ndarray | None]] = []
    for seg, n in view.segments:
        if not n:
            continue
        if seg.on_device or quantized_search.applies(seg, name, [s]) is not None:
            return None
        picked = rows_of(seg, n, name)
        if picked is None:
            return None
        rows, count = picked
        if not count:
            continue
        index = seg.ann.get(name)
        if index is not None:
            if full_scan is None:
                full_scan = ann.full_scan_rows(view.config.hnsw_config, seg.row_bytes(name))
            if ann.use_index(index, s.exact, count, n, full_scan):
                return None
        chosen.append((seg, n, rows))
    q = _prepared_one(v, vspec.size, dist)  # bad input is refused whatever is stored
    if len(chosen) == 1 and chosen[0][2] is None and chosen[0][1] <= min(k, RANKED_MAX) \
            and dist.metric != "l1" and _plain_unpaged(s):
        ranked = _ranked_one(chosen[0][0], name, chosen[0][1], q, k, dist)
        if ranked is not None:
            return ranked
    found: list[tuple[Segment, np.ndarray, np.ndarray]] = []
    for seg, n, rows in chosen:
        one = _scored_one(seg, name, n, q, k, dist.metric, rows)
        if one is None:
            return None
        found.append(one)
    return _rendered_one(view, s, dist, found)


# a small segment's plain records in one C call (engine/_records.c `ranked`)
RANKED_MAX = 256


def _plain_unpaged(s: SearchSpec) -> bool:
    """Plain records of the first `limit` hits: no selectors, no offset, no threshold."""
    return not s.offset and s.score_threshold is None \
        and plain_selectors(s.with_payload, s.with_vector)


_F32 = np.dtype(np.float32)
_U64 = np.dtype(np.uint64)


def _sole_segment(view: View) -> tuple[Segment | None, int]:
    """The view's one non-empty segment and its rows; (None, 0) when there are none or
    several (the single-segment direct paths then step aside)."""
    seg: Segment | None = None
    n = 0
    for sg, m in view.segments:
        if m:
            if seg is not None:
                return None, 0
            seg, n = sg, m
    return seg, n


def _tiny_one(view: View, s: SearchSpec) -> list[dict[str, Any]] | None:
    """A plain Cosine or Dot query over one small segment (every row fits the limit) that no
    index or quantization serves: a fresh or test-sized collection. Its products with the
    rows and the ranked records in one C call (engine/_records.c `ranked_query`): the records
    `_exact_one` gives, bit for bit, without the dozen Python and numpy calls around them
    (those, not the arithmetic, were most of a 10-point query's engine time: bench/overhead.py,
    timed in the server). None: the other paths decide (the size test comes first: a large
    collection's query pays ~0.3 us here)."""
    seg, n = _sole_segment(view)
    k = s.limit
    if seg is None or n > k or n > RANKED_MAX or _records is None:
        return None
    v = s.vector
    if type(v) is not np.ndarray or v.ndim != 1 or s.pred is not None or s.exclude_ids \
            or not _plain_unpaged(s) or seg.on_device:
        return None
    vspec = view.config.vector(s.using)
    name, dist = vspec.name, vspec.distance
    if dist.metric != "ip" or name in seg.ann \
            or type(seg.ids) is not list or seg.versions.dtype is not _U64 \
            or quantized_search.applies(seg, name, [s]) is not None \
            or seg.live_mask(n, name)[1] != n:
        return None
    host = seg.matrices[name].host_resident(n)
    if host is None or host[0].dtype is not _F32:
        return None
    q = _prepared_one(v, vspec.size, dist)  # refuses a wrong dimension and NaN
    seg.touch()
    return _records.ranked_query(seg.ids, seg.versions, host[0], q, not dist.higher_is_better,
                                 k)


def _ranked_one(seg: Segment, name: str, n: int, q: np.ndarray, k: int, dist: Any
                ) -> list[dict[str, Any]] | None:
    """All n (<= k) rows of one segment scored and ranked, as plain records: what
    `_scored_one` and `_rendered_one` give for them (the stable order of gpu.topk.topk_one
    when k >= n, the same float64 scores), with the selection and the records in one C
    call. None: the steps decide (no C module, a score not finite, rows on the device)."""
    if _records is None or type(seg.ids) is not list or seg.versions.dtype != np.uint64:
        return None
    host = seg.matrices[name].host_resident(n)
    if host is None:
        return None
    seg.touch()
    sims = flat.scores_one(host[0], q, dist.metric, host[1])
    return _records.ranked(seg.ids, seg.versions, sims, not dist.higher_is_better, k)


def _scored_one(seg: Segment, name: str, n: int, q: np.ndarray, k: int, metric: Any,
                rows: np.ndarray | None) -> tuple[Segment, np.ndarray, np.ndarray] | None:
    """One segment's exact 1-D top-k for the direct paths (`rows`: the ones to score, else
    all n); None when its rows moved to the device meanwhile (the general path handles it:
    rows and norms are read together, never host rows with device norms)."""
    host = seg.matrices[name].host_resident(n)
    if host is None:
        return None
    seg.touch()
    sims, hits = flat.search_one(host[0], q, k, metric, rows, host[1])
    return seg, sims, hits


def _rendered_one(view: View, s: SearchSpec, dist: Any,
                  found: list[tuple[Segment, np.ndarray, np.ndarray]]
                  ) -> list[dict[str, Any]]:
    """Per-segment 1-D (sims, rows) results of one query merged as gpu.topk.merge merges
    (segments in view order, a stable sort, the first k), thresholded, paged and rendered.
    The finishing passes work on at most k Python floats: numpy's per-call set-up is most
    of their cost at this size; float32 -> Python float is exact, as via float64."""
    k = s.limit + s.offset
    if not found:
        return []
    which: list[int] | None = None
    if len(found) == 1:
        seg, sims, hits = found[0]
        if _plain_unpaged(s):
            # the plain unpaged result: the records the steps below give, from the float64
            # scores at once (float32 -> float64 is exact, as via tolist()); a non-finite
            # score makes the sum non-finite and takes the steps below
            sims64 = sims[:k].astype(np.float64)
            if math.isfinite(float(sims64.sum())):
                if not dist.higher_is_better:
                    sims64 = -sims64
                return plain_records(seg, hits[None, :k], sims64[None, :])[0]
    else:
        # non-finite scores rank last, as gpu.flat._finish leaves them, then are dropped
        parts = [np.where(np.isfinite(f[1]), f[1], flat.NEG_INF) for f in found]
        all_sims = np.concatenate(parts)
        order = np.argsort(-all_sims, kind="stable")[:k]
        sims = all_sims[order]
        hits = np.concatenate([f[2] for f in found])[order]
        which = np.repeat(np.arange(len(found)), [len(p) for p in parts])[order].tolist()
    sims_l = sims.tolist()
    keep = [math.isfinite(x) for x in sims_l]  # overflowing vectors: not matches
    if s.score_threshold is not None:
        limit = dist.threshold_to_sim(s.score_threshold)
        keep = [ok and x > limit for ok, x in zip(keep, sims_l, strict=True)]  # strict
    if not all(keep):
        sel = [i for i, ok in enumerate(keep) if ok]
        hits, sims_l = hits[np.asarray(sel, np.int64)], [sims_l[i] for i in sel]
        which = None if which is None else [which[i] for i in sel]
    hits, sims_l = hits[s.offset : k], sims_l[s.offset : k]
    scores = sims_l if dist.higher_is_better else [-x for x in sims_l]
    if which is None:
        return render(view, seg, hits, s.with_payload, s.with_vector, scores)
    handles = [(found[w][0].seg_id << ROW_BITS) | r
               for w, r in zip(which[s.offset : k], hits.tolist(), strict=True)]
    return render_handles(view, handles, s.with_payload, s.with_vector, scores)
