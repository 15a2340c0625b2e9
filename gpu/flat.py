"""Exact (brute-force) search, written once against the xp API: the test oracle.

`search` scores a batch of queries against one block of vectors with one GEMM (or, for L1,
a chunked broadcast), applies an optional row mask, and selects the top-k. On the CPU a
faiss fast path (blocked GEMM + heap selection, no full score matrix) is used when faiss is
importable; the xp path stays the reference that tests compare against.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from gpu.select import select_topk
from gpu.topk import NEG_INF, topk, topk_one
from gpu.xp import guard, is_device_array, to_host, xp_of

Metric = Literal["ip", "l2", "l1"]

try:  # faiss-cpu is a runtime dependency; keep the xp path usable without it.
    import faiss

    HAVE_FAISS = True
except Exception:  # noqa: BLE001
    faiss = None
    HAVE_FAISS = False

# gpu/_rows.c (built by setup.py where a C compiler is found): one query's inner products
# with listed host rows, read in place; without it the rows are gathered, then one GEMV.
try:
    from gpu import _rows
except ImportError:  # pragma: no cover - installed without a C compiler
    _rows = None  # type: ignore[assignment]

# Below this fraction of allowed rows, gather them and score only those.
GATHER_FRACTION = 0.3
# OpenMP team size is per calling thread (each request runs on a pool thread): small query
# batches run single-threaded, since spinning up a team costs more than the scan itself
# (measured: 0.45 ms vs 16 ms for one query over 20k x 128 on 2 cores).
PARALLEL_MIN_QUERIES = 32
_CORES = os.cpu_count() or 1
_L1_CHUNK_ELEMS = 1 << 24
# Device score matrices are built this many bytes at a time (rows of the database per chunk
# = SCORE_BYTES / (4 * batch)), so a 1000-query batch over 1M rows never needs 4 GB at once.
SCORE_BYTES = 1 << 30


def similarity(vectors: Any, queries: Any, metric: Metric, sq_norms: Any = None) -> Any:
    """(b, n) similarity matrix, higher is better: dot, -L2 distance, or -L1 distance."""
    xp = xp_of(vectors)
    q = xp.asarray(queries, dtype=xp.float32)
    x = vectors if vectors.dtype == xp.float32 else vectors.astype(xp.float32)
    if metric == "ip":
        return q @ x.T
    if metric == "l2":
        if sq_norms is None:
            sq_norms = (x * x).sum(axis=1)
        d2 = (q * q).sum(axis=1)[:, None] + sq_norms[None, :] - 2.0 * (q @ x.T)
        return -xp.sqrt(xp.maximum(d2, 0.0))
    if metric == "l1":
        b, n = q.shape[0], x.shape[0]
        out = xp.empty((b, n), dtype=xp.float32)
        step = max(1, _L1_CHUNK_ELEMS // max(1, b * x.shape[1]))
        for s in range(0, n, step):  # chunks of rows, not points: bounded temporary memory
            out[:, s : s + step] = -xp.abs(q[:, None, :] - x[None, s : s + step, :]).sum(axis=2)
        return out
    raise ValueError(f"unknown metric {metric}")


def listed_similarity(vectors: Any, rows: np.ndarray, query: np.ndarray, metric: Metric,
                      sq_norms: Any = None) -> np.ndarray | None:
    """(m,) similarities of one (d,) query with the listed host rows, as `similarity` scores
    them but read where they lie (gpu/_rows.c: no gathered copy, misses overlapped; a 1 %
    filtered query spent 40 % of its time in the gather). The sums' order is not BLAS's, so
    the last bits may differ from a GEMM's: every one-query scan of listed rows goes through
    here, keeping the direct and general paths identical. None: gather and GEMV instead
    (no module, L1, device or non-float32 rows, L2 without stored norms)."""
    if _rows is None or metric == "l1" or not isinstance(vectors, np.ndarray) \
            or vectors.dtype != np.float32 or vectors.ndim != 2 \
            or not vectors.flags.c_contiguous:
        return None
    if metric == "l2" and not isinstance(sq_norms, np.ndarray):
        return None
    r = rows if rows.dtype == np.int64 and rows.flags.c_contiguous else \
        np.ascontiguousarray(rows, dtype=np.int64)
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
    out = np.empty(len(r), np.float32)
    _rows.dots(vectors, r, q, out)
    if metric == "ip":
        return out
    assert isinstance(sq_norms, np.ndarray)
    d2 = (q * q).sum() + sq_norms.take(r) - 2.0 * out  # similarity()'s L2, row by row
    return -np.sqrt(np.maximum(d2, 0.0))


def _faiss_knn(x: np.ndarray, q: np.ndarray, k: int, metric: Metric) -> tuple[np.ndarray, np.ndarray]:
    m = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2, "l1": faiss.METRIC_L1}[metric]
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    faiss.omp_set_num_threads(_CORES if len(q) >= PARALLEL_MIN_QUERIES else 1)
    dist, idx = faiss.knn(q, x, k, metric=m)
    if metric == "l2":
        dist = -np.sqrt(np.maximum(dist, 0.0))
    elif metric == "l1":
        dist = -dist
    return dist.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)


def search(
    vectors: Any,
    queries: np.ndarray,
    k: int,
    metric: Metric,
    mask: np.ndarray | None = None,
    sq_norms: Any = None,
    use_faiss: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of `vectors` (n, d) for each query in `queries` (b, d).

    `mask` (host bool, length n) restricts the candidates; an int array instead lists
    them (ascending rows: only those are gathered and scored). Returns host arrays
    (scores (b, k'), rows (b, k')), higher score first; entries with score -inf are not
    matches (fewer than k allowed rows) and carry row -1.
    """
    n = vectors.shape[0]
    b = queries.shape[0]
    if n == 0 or k <= 0:
        return np.empty((b, 0), np.float32), np.empty((b, 0), np.int64)
    rows_map = None
    if mask is not None:
        listed = mask.dtype != np.bool_  # the allowed rows themselves, ascending
        allowed = len(mask) if listed else int(np.count_nonzero(mask))
        if allowed == 0:
            return np.empty((b, 0), np.float32), np.empty((b, 0), np.int64)
        if listed or allowed < n * GATHER_FRACTION or (allowed < n and not use_faiss):
            rows_map = mask if listed else np.flatnonzero(mask)
            if b == 1 and (one := listed_similarity(vectors, rows_map, queries[0], metric,
                                                    sq_norms)) is not None:
                vals, idx = topk(one[None, :], min(k, allowed))
                return _finish(np.asarray(vals, dtype=np.float32),
                               np.asarray(idx, dtype=np.int64), rows_map)
            xp = xp_of(vectors)
            at = xp.asarray(rows_map)
            vectors = vectors.take(at, axis=0)  # (numpy: half the time of fancy indexing)
            if sq_norms is not None:
                sq_norms = sq_norms.take(at)
            mask = None
            n = allowed
    kk = min(k, n)
    on_device = is_device_array(vectors)
    if on_device:
        with guard("exact search"):
            vals, idx = _device_search(vectors, queries, kk, metric, mask, sq_norms)
        return _finish(vals, idx, rows_map)
    # Single queries: a BLAS GEMV (multi-threaded) + argpartition beats faiss's single-thread
    # scan (measured 2.3 vs 4.2 ms at 100k x 128); batches and L1 go to faiss.
    faiss_wins = metric == "l1" or b >= PARALLEL_MIN_QUERIES
    if HAVE_FAISS and use_faiss and faiss_wins and not on_device and mask is None:
        vals, idx = _faiss_knn(vectors, queries, kk, metric)
    else:
        xp = xp_of(vectors)
        scores = similarity(vectors, queries, metric, sq_norms)
        if mask is not None:
            scores[:, ~xp.asarray(mask)] = NEG_INF
        vals, idx = topk(scores, kk)
    return _finish(np.asarray(vals, dtype=np.float32), np.asarray(idx, dtype=np.int64), rows_map)


def scores_one(vectors: np.ndarray, query: np.ndarray, metric: Metric,
               sq_norms: np.ndarray | None = None) -> np.ndarray:
    """One (d,) float32 query's similarities with every host row, as `similarity` gives
    them (not Manhattan: its batch path is faiss's scan)."""
    if metric == "ip" and vectors.dtype == np.float32 and query.dtype == np.float32:
        # similarity()'s product for one query: the same gemv, the same bits (numpy runs
        # (1, d) @ x.T and x @ q through one BLAS call), minus its set-up and three views
        return vectors.dot(query)
    return similarity(vectors, query[None], metric, sq_norms)[0]


def search_one(vectors: np.ndarray, query: np.ndarray, k: int, metric: Metric,
               rows: np.ndarray | None = None, sq_norms: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """One query ((d,) float32) over host rows — all of them, or the ascending `rows` listed
    — answered exactly as `search(vectors, query[None], k, metric, rows)` answers it, minus
    the batch set-up (a selective filtered search is ~100 rows: numpy's per-call costs, not
    the scan, were its time, py-spy). Returns 1-D (sims, rows), best first; a non-finite
    score (an overflowing vector) is left for the caller to check."""
    if metric == "l1" and HAVE_FAISS:  # the batch path's faiss scan, for the same sums
        vals, idx = search(vectors, query[None], k, metric, rows, sq_norms)
        return vals[0], idx[0]
    sims = None if rows is None else listed_similarity(vectors, rows, query, metric, sq_norms)
    if sims is None:
        if rows is not None:
            vectors = vectors.take(rows, axis=0)  # half the time of fancy indexing, same rows
            if sq_norms is not None:
                sq_norms = sq_norms.take(rows)
        sims = scores_one(vectors, query, metric, sq_norms)
    n = len(sims)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    vals, idx = topk_one(sims, k)  # the selection topk() makes for one query, step for step
    return vals, idx if rows is None else rows[idx]


def _finish(vals: np.ndarray, idx: np.ndarray, rows_map: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray]:
    if not idx.size or (idx.min() >= 0 and np.isfinite(vals).all()):
        # every entry a match (the usual case): no masking passes (a selective filtered
        # search is a few hundred rows; these were a fifth of its time, cProfile)
        return vals, idx if rows_map is None else rows_map[idx]
    bad = ~np.isfinite(vals) | (idx < 0)
    if rows_map is not None:
        idx = np.where(bad, -1, rows_map[np.clip(idx, 0, None)])
    vals = np.where(bad, NEG_INF, vals)
    idx = np.where(bad, -1, idx)
    return vals, idx


def _device_search(vectors: Any, queries: np.ndarray, k: int, metric: Metric,
                   mask: np.ndarray | None, sq_norms: Any) -> tuple[np.ndarray, np.ndarray]:
    """The device path: per chunk of rows one GEMM (float32 accumulation, whatever the storage
    dtype), masked rows pushed to -inf by one broadcast add, then a bucket-select top-k; chunk
    winners merge on the device and only (b, k) results cross back to the host."""
    xp = xp_of(vectors)
    q = xp.asarray(np.ascontiguousarray(queries, dtype=np.float32))
    n, b = vectors.shape[0], q.shape[0]
    step = max(4096, SCORE_BYTES // (4 * max(b, 1)))
    col_bias = None  # per-row term added to every score: 0 / -inf (mask), -|x|^2 (L2)
    if mask is not None:
        col_bias = xp.where(xp.asarray(mask), xp.float32(0), NEG_INF).astype(xp.float32)
    if metric == "l2":
        if sq_norms is None:
            x32 = vectors.astype(xp.float32)
            sq_norms = (x32 * x32).sum(axis=1)
        neg = -sq_norms.astype(xp.float32, copy=False)
        col_bias = neg if col_bias is None else col_bias + neg
    vals_parts, idx_parts = [], []
    for s in range(0, n, step):
        x = vectors[s : s + step]
        if x.dtype != xp.float32:
            x = x.astype(xp.float32)  # float16/uint8 storage: upcast one chunk, GEMM in fp32
        if metric == "l1":
            sc = similarity(x, q, "l1")
        elif metric == "l2":
            sc = q @ x.T
            sc *= 2.0  # 2 q.x - |x|^2 ranks like -|q - x|^2
        else:
            sc = q @ x.T
        if col_bias is not None:
            sc += col_bias[None, s : s + step]
        v, i = select_topk(sc, k)
        vals_parts.append(v)
        idx_parts.append(i + s)
    vals, idx = vals_parts[0], idx_parts[0]
    if len(vals_parts) > 1:
        vals, order = select_topk(xp.concatenate(vals_parts, axis=1), k)
        idx = xp.take_along_axis(xp.concatenate(idx_parts, axis=1), order, axis=1)
    if metric == "l2":
        qn = (q * q).sum(axis=1)
        vals = -xp.sqrt(xp.maximum(qn[:, None] - vals, 0.0))
    return (to_host(vals).astype(np.float32, copy=False),
            to_host(idx).astype(np.int64, copy=False))
