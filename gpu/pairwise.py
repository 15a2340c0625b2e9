"""Nearest neighbours within one set of vectors (a distance matrix), for numpy or cupy.

One GEMM of the rows against themselves gives every pair's similarity ("ip"; "l2" expands
|a - b|^2 from it); "l1" has no GEMM form and is summed in row blocks. The diagonal is
excluded and each row keeps its k best others by a partial selection (argpartition), then
only those k are sorted. A sample too large for one (s, s) matrix runs as a few GEMMs over
blocks of rows, so memory stays bounded. `xp` is the module owning the arrays (gpu.xp.xp_of).
"""

from __future__ import annotations

from typing import Any

import numpy as np

L1_BLOCK_BYTES = 64 << 20  # working memory of one block of the L1 broadcast
SIM_BLOCK_BYTES = 512 << 20  # the largest similarity block held at once


def similarities(xp: Any, block: Any, rows: Any, metric: str) -> Any:
    """(b, s) float32 similarities of `block` against `rows`, higher is better: "ip" the dot
    product, "l2" minus the squared distance, "l1" minus the L1 distance."""
    if metric == "l1":
        b, (s, d) = block.shape[0], rows.shape
        out = xp.empty((b, s), dtype=xp.float32)
        step = max(1, L1_BLOCK_BYTES // max(1, s * d * 4))
        for a in range(0, b, step):  # blocks of rows, not points: bounded memory
            out[a:a + step] = -xp.abs(block[a:a + step, None, :] - rows[None, :, :]).sum(axis=2)
        return out
    sim = block @ rows.T  # the GEMM
    if metric == "l2":
        bq = xp.einsum("ij,ij->i", block, block)
        rq = xp.einsum("ij,ij->i", rows, rows)
        sim = xp.minimum(2.0 * sim - bq[:, None] - rq[None, :], 0.0)  # -|a - b|^2, never > 0
    return sim.astype(xp.float32, copy=False)


def nearest_others(xp: Any, rows: Any, k: int, metric: str) -> tuple[Any, Any]:
    """For each row, the k most similar other rows: ((s, k) column indices, (s, k)
    similarities), best first; equal similarities keep the lower index first."""
    s = rows.shape[0]
    k = min(k, s - 1)
    if k <= 0:
        return xp.empty((s, 0), dtype=xp.int64), xp.empty((s, 0), dtype=xp.float32)
    step = max(1, SIM_BLOCK_BYTES // (4 * s))  # all rows at once unless s is very large
    if step >= s:
        return _block_top(xp, rows, rows, 0, k, metric)
    parts = [_block_top(xp, rows[a:a + step], rows, a, k, metric) for a in range(0, s, step)]
    return xp.concatenate([c for c, _ in parts]), xp.concatenate([v for _, v in parts])


def _block_top(xp: Any, block: Any, rows: Any, first: int, k: int, metric: str
               ) -> tuple[Any, Any]:
    """The top k of rows [first, first + len(block)) of the matrix."""
    b, s = block.shape[0], rows.shape[0]
    sim = similarities(xp, block, rows, metric)
    at = xp.arange(b)
    sim[at, at + first] = -xp.inf  # a point is never its own neighbour
    if k < s - 1:
        cand = xp.argpartition(-sim, k - 1, axis=1)[:, :k]
        cand = xp.sort(cand, axis=1)  # index order, so the stable sort below breaks ties by it
    else:
        cand = xp.broadcast_to(xp.arange(s), (b, s))
    top = xp.take_along_axis(sim, cand, axis=1)
    # numpy needs asking for a stable sort; cupy's (radix) sort is always stable
    order = xp.argsort(-top, axis=1, kind="stable") if xp is np else xp.argsort(-top, axis=1)
    cols = xp.take_along_axis(cand, order, axis=1)[:, :k]
    return cols.astype(xp.int64, copy=False), xp.take_along_axis(top, order, axis=1)[:, :k]
