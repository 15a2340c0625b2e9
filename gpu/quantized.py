"""Scoring quantized codes, written once against the xp API (numpy on the host, cupy on a
device): scalar int8 codes by one GEMM per chunk, binary codes by XOR + popcount, product
codes by table look-ups (ADC). Every scan returns approximate similarities, higher is
better, in the same units as gpu.flat ("ip": dot, "l2": -distance, "l1": -distance), and
selects a masked top-k chunk by chunk, so no (queries × rows) matrix larger than
SCORE_ELEMS ever exists. No per-point Python loops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import faiss
except ImportError:  # pragma: no cover - the bare GPU image: numpy scans on the host
    faiss = None

from gpu.select import select_topk
from gpu.topk import NEG_INF, topk
from gpu.xp import guard, to_host, xp_of

SCORE_ELEMS = 1 << 24  # temporaries per chunk (floats or bytes), whatever the batch size
_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def chunked_topk(score: Callable[[int, int], Any], xp: Any, n: int, b: int, k: int,
                 mask: np.ndarray | None, row_cost: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over rows [0, n) of scores produced chunk by chunk (`score(s, e)` → (b, e-s)
    xp float32); `mask` (host bools, n) keeps only allowed rows. Host (vals, rows); misses
    carry -inf and row -1."""
    k = min(k, n)
    if n == 0 or k <= 0:
        return np.empty((b, 0), np.float32), np.empty((b, 0), np.int64)
    step = max(1024, SCORE_ELEMS // max(1, b * row_cost))
    bias = None
    if mask is not None:
        bias = xp.where(xp.asarray(mask), xp.float32(0), NEG_INF).astype(xp.float32)
    select = topk if xp is np else select_topk
    vals_parts, idx_parts = [], []
    for s in range(0, n, step):
        e = min(n, s + step)
        sc = score(s, e)
        if bias is not None:
            sc = sc + bias[None, s:e]
        v, i = select(sc, min(k, e - s))
        vals_parts.append(v)
        idx_parts.append(i + s)
    vals, idx = vals_parts[0], idx_parts[0]
    if len(vals_parts) > 1:
        vals, order = select(xp.concatenate(vals_parts, axis=1), k)
        idx = xp.take_along_axis(xp.concatenate(idx_parts, axis=1), order, axis=1)
    vals = to_host(vals).astype(np.float32, copy=False)
    idx = to_host(idx).astype(np.int64, copy=False)
    bad = ~np.isfinite(vals)
    return np.where(bad, NEG_INF, vals), np.where(bad, -1, idx)


def _finish_distance(d2_or_d1: Any, metric: str) -> Any:
    xp = xp_of(d2_or_d1)
    if metric == "l2":
        return -xp.sqrt(xp.maximum(d2_or_d1, 0.0))
    return -d2_or_d1


# ---- scalar int8 ---------------------------------------------------------------------------


def int8_scores(codes: Any, queries: Any, scale: float, offset: float, metric: str,
                sq_norms: Any = None) -> Any:
    """(b, c) approximate similarities of queries (xp float32) to codes (c, d) uint8 that
    stand for offset + scale * code. One GEMM: the codes are cast a chunk at a time (exact
    in float16 and float32: codes are small integers); accumulation is float32."""
    xp = xp_of(codes)
    if metric == "l1":
        x = codes.astype(xp.float32) * xp.float32(scale) + xp.float32(offset)
        return -xp.abs(queries[:, None, :] - x[None, :, :]).sum(axis=2)
    if xp is np:
        dot = queries @ codes.astype(np.float32).T
    else:  # the device: float16 operands, float32 result (tensor cores where there are some)
        dot = (queries.astype(xp.float16) @ codes.astype(xp.float16).T).astype(xp.float32)
    dot *= xp.float32(scale)
    dot += (xp.float32(offset) * queries.sum(axis=1))[:, None]
    if metric == "ip":
        return dot
    qn = (queries * queries).sum(axis=1)
    return _finish_distance(qn[:, None] - 2.0 * dot + sq_norms[None, :], metric)


def int8_topk(codes: Any, queries: np.ndarray, k: int, metric: str, scale: float,
              offset: float, mask: np.ndarray | None, sq_norms: Any = None
              ) -> tuple[np.ndarray, np.ndarray]:
    xp = xp_of(codes)
    with guard("quantized search"):
        q = xp.asarray(np.ascontiguousarray(queries, dtype=np.float32))
        return chunked_topk(
            lambda s, e: int8_scores(codes[s:e], q, scale, offset, metric,
                                     None if sq_norms is None else sq_norms[s:e]),
            xp, codes.shape[0], len(q), k, mask, codes.shape[1] + 1)


# ---- binary (XOR + popcount) -----------------------------------------------------------------


def popcount(a: Any) -> Any:
    """Set bits per element of an unsigned integer array (uint8 result for uint8 input)."""
    xp = xp_of(a)
    if hasattr(xp, "bitwise_count"):
        return xp.bitwise_count(a)
    table = _POP8 if xp is np else xp.asarray(_POP8)
    return table[a]


def hamming(codes: Any, qcodes: Any) -> Any:
    """(b, c) Hamming distances between packed query codes (b, w) and codes (c, w), both
    uint8: XOR + popcount, summed per row in int32."""
    x = codes[None, :, :] ^ qcodes[:, None, :]
    return popcount(x).sum(axis=2, dtype=xp_of(codes).int32)


def binary_scores(codes: Any, qcodes: Any, bits: int, metric: str) -> Any:
    """Similarities of codes that stand for ±1 levels: `bits - 2 * hamming` is their dot
    product; L2 and L1 distances between such vectors are 2√hamming and 2·hamming."""
    xp = xp_of(codes)
    h = hamming(codes, qcodes).astype(xp.float32)
    if metric == "ip":
        return xp.float32(bits) - 2.0 * h
    if metric == "l2":
        return -2.0 * xp.sqrt(h)
    return -2.0 * h


def binary_topk(codes: Any, qcodes: np.ndarray, bits: int, k: int, metric: str,
                mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    xp = xp_of(codes)
    with guard("quantized search"):
        q = xp.asarray(np.ascontiguousarray(qcodes, dtype=np.uint8))
        return chunked_topk(lambda s, e: binary_scores(codes[s:e], q, bits, metric), xp,
                            codes.shape[0], len(q), k, mask, codes.shape[1] + 1)


def levels_scores(codes: Any, queries: Any, unpack: Callable[[Any], Any], metric: str) -> Any:
    """Asymmetric binary scoring: float queries against the codes' levels (`unpack(codes)` →
    (c, d) float32 levels), one GEMM per chunk."""
    xp = xp_of(codes)
    lv = unpack(codes)
    dot = queries @ lv.T
    if metric == "ip":
        return dot
    qn = (queries * queries).sum(axis=1)
    ln = (lv * lv).sum(axis=1)
    d2 = qn[:, None] - 2.0 * dot + ln[None, :]
    return -xp.sqrt(xp.maximum(d2, 0.0)) if metric == "l2" else -xp.maximum(d2, 0.0)


def levels_topk(codes: Any, queries: np.ndarray, unpack: Callable[[Any], Any], dim: int,
                k: int, metric: str, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    xp = xp_of(codes)
    with guard("quantized search"):
        q = xp.asarray(np.ascontiguousarray(queries, dtype=np.float32))
        return chunked_topk(lambda s, e: levels_scores(codes[s:e], q, unpack, metric), xp,
                            codes.shape[0], len(q), k, mask, dim + 1)


# ---- product quantization (asymmetric distance tables) ---------------------------------------


def pq_tables(queries: Any, centroids: Any, metric: str) -> Any:
    """(b, M, K) per-subspace similarities (ip) or distances (l2: squared, l1) between each
    query's sub-vectors and every centroid (centroids: (M, K, dsub))."""
    xp = xp_of(centroids)
    m, _, dsub = centroids.shape
    qs = queries.reshape(len(queries), m, dsub)
    if metric == "ip":
        return xp.einsum("bmd,mkd->bmk", qs, centroids)
    if metric == "l2":
        cn = (centroids * centroids).sum(axis=2)
        qn = (qs * qs).sum(axis=2)
        return qn[:, :, None] - 2.0 * xp.einsum("bmd,mkd->bmk", qs, centroids) + cn[None]
    return xp.abs(qs[:, :, None, :] - centroids[None]).sum(axis=3)


def pq_scores(codes: Any, tables: Any, metric: str) -> Any:
    """(b, c) scores of codes (c, M) uint8: the sum over subspaces of table look-ups."""
    xp = xp_of(codes)
    b, m, kk = tables.shape
    flat = codes.astype(xp.int64) + (xp.arange(m, dtype=xp.int64) * kk)[None, :]
    total = tables.reshape(b, m * kk)[:, flat].sum(axis=2)
    return total if metric == "ip" else _finish_distance(total, metric)


def pq_topk(codes: Any, queries: np.ndarray, centroids: Any, k: int, metric: str,
            mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    xp = xp_of(codes)
    with guard("quantized search"):
        q = xp.asarray(np.ascontiguousarray(queries, dtype=np.float32))
        tables = pq_tables(q, centroids, metric).astype(xp.float32)
        return chunked_topk(lambda s, e: pq_scores(codes[s:e], tables, metric), xp,
                            codes.shape[0], len(q), k, mask, codes.shape[1] + 1)


# ---- host: faiss owns the codes and scans them (SIMD kernels) ---------------------------------
#
# On the host, int8 and binary codes are held by a faiss index (IndexScalarQuantizer with
# QT_8bit_uniform, IndexBinaryFlat) and the QuantizedRows' `codes` array is a numpy view of the
# index's own code bytes (held once, exported as they are to snapshots and devices). faiss
# scans them with its SIMD kernels (~5x a cast + BLAS GEMM per chunk); masks are an
# IDSelectorBitmap. The numpy code above stays the fallback, and cupy's on a device.


class _CodesView:
    """Exposes a faiss index's code bytes to numpy; the array's base keeps the index alive."""

    def __init__(self, index: Any, addr: int, shape: tuple[int, int]) -> None:
        self.index = index
        self.__array_interface__ = {"data": (addr, False), "shape": shape, "typestr": "|u1",
                                    "version": 3}


def _own_codes(index: Any, codes: np.ndarray) -> np.ndarray:
    """Copy `codes` into the index (its ntotal rows) and return a numpy view of its copy."""
    n, width = codes.shape
    store = index.xb if isinstance(index, faiss.IndexBinaryFlat) else index.codes
    if n:
        faiss.copy_array_to_vector(np.ascontiguousarray(codes).ravel(), store)
    index.ntotal = n
    if not n:
        return np.empty((0, width), np.uint8)
    addr = faiss.rev_swig_ptr(store.data(), n * width).__array_interface__["data"][0]
    return np.asarray(_CodesView(index, addr, (n, width)))


def faiss_int8(codes: np.ndarray, scale: float, offset: float, metric: str
               ) -> tuple[Any, np.ndarray] | None:
    """(index, its codes as numpy) for host int8 codes, or None where faiss does not apply
    (no faiss, L1). faiss decodes code c as offset + (c + 0.5)·scale: half a step above ours,
    which `faiss_int8_topk` undoes exactly."""
    if faiss is None or metric not in ("ip", "l2"):
        return None
    index = faiss.IndexScalarQuantizer(codes.shape[1], faiss.ScalarQuantizer.QT_8bit_uniform,
                                       faiss.METRIC_L2 if metric == "l2" else
                                       faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.array([offset, 255.0 * scale], np.float32), index.sq.trained)
    index.is_trained = True
    return index, _own_codes(index, codes)


def faiss_binary(codes: np.ndarray) -> tuple[Any, np.ndarray] | None:
    """(IndexBinaryFlat, its codes as numpy) for host packed binary codes."""
    if faiss is None:
        return None
    index = faiss.IndexBinaryFlat(8 * codes.shape[1])
    return index, _own_codes(index, codes)


def _search(index: Any, q: np.ndarray, k: int, mask: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray]:
    if mask is None:
        return index.search(q, k)
    bits = np.packbits(mask, bitorder="little")  # alive for the whole search
    sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
    return index.search(q, k, params=faiss.SearchParameters(sel=sel))


def _finish(vals: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bad = rows < 0
    return (np.where(bad, NEG_INF, vals).astype(np.float32),
            np.where(bad, -1, rows).astype(np.int64))


def faiss_int8_topk(index: Any, queries: np.ndarray, k: int, metric: str, scale: float,
                    mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """int8_topk's result through the faiss index (same units: dot, or -L2 distance)."""
    n = index.ntotal
    k = min(k, n)
    if k <= 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    half = np.float32(0.5 * scale)  # faiss' rows sit half a step above ours
    if metric == "l2":  # |(q + h) - (x + h)| = |q - x|
        d2, rows = _search(index, q + half, k, mask)
        return _finish(-np.sqrt(np.maximum(d2, 0.0)), rows)
    dots, rows = _search(index, q, k, mask)  # q·(x + h) = q·x + h·Σq
    return _finish(dots - half * q.sum(axis=1, keepdims=True), rows)


def faiss_binary_topk(index: Any, qcodes: np.ndarray, bits: int, k: int, metric: str,
                      mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """binary_topk's result through IndexBinaryFlat (Hamming distances, then our units)."""
    n = index.ntotal
    k = min(k, n)
    if k <= 0:
        return np.empty((len(qcodes), 0), np.float32), np.empty((len(qcodes), 0), np.int64)
    h, rows = _search(index, np.ascontiguousarray(qcodes, dtype=np.uint8), k, mask)
    hf = h.astype(np.float32)
    if metric == "ip":
        vals = np.float32(bits) - 2.0 * hf
    elif metric == "l2":
        vals = -2.0 * np.sqrt(hf)
    else:
        vals = -2.0 * hf
    return _finish(vals, rows)


def faiss_pq(codes: np.ndarray, centroids: np.ndarray, metric: str
             ) -> tuple[Any, np.ndarray] | None:
    """(IndexPQ, its codes as numpy) for host product codes of 256-centroid sub-quantizers
    (one byte each, as faiss packs 8-bit codes); None otherwise (numpy scans them)."""
    m, kk, dsub = centroids.shape
    if faiss is None or kk != 256 or metric not in ("ip", "l2"):
        return None
    index = faiss.IndexPQ(m * dsub, m, 8, faiss.METRIC_L2 if metric == "l2" else
                          faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, np.float32).ravel(),
                               index.pq.centroids)
    index.is_trained = True
    return index, _own_codes(index, codes)


def faiss_pq_topk(index: Any, queries: np.ndarray, k: int, metric: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """pq_topk's result (unmasked: IndexPQ takes no IDSelector) through the faiss index."""
    k = min(k, index.ntotal)
    if k <= 0:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    vals, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return _finish(-np.sqrt(np.maximum(vals, 0.0)) if metric == "l2" else vals, rows)
