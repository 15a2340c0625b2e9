"""MaxSim (late interaction, ColBERT) over one segment's token rows, for numpy or cupy.

One GEMM of the query tokens against every candidate token row, a segmented max over each
point's token range (`maximum.reduceat` over the row starts) and a sum over query tokens:
no loop per point. `xp` is the module owning the arrays (gpu.xp.xp_of). numpy segments
with `maximum.reduceat`; cupy has no `reduceat` (14.2: NotImplementedError), so on the
device each token's similarities go to its point's row by an atomic max (`cupyx.scatter_max`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def maxsim(xp: Any, query: Any, tokens: Any, starts: Any, metric: str) -> Any:
    """Per point: sum over query tokens of the best token similarity. `query` (q, d) and
    `tokens` (t, d) float32 (Cosine: both unit length); `starts` (m,) ascending starts of the
    points' token ranges within `tokens`, each range non-empty and ending where the next
    starts (the last at t). metric "ip": dot products; "l2": Qdrant's internal similarity,
    minus the squared distance (the caller turns the sum into a distance)."""
    sim = query @ tokens.T  # (q, t): the one GEMM
    if metric == "l2":
        tn = xp.einsum("ij,ij->i", tokens, tokens)
        qn = xp.einsum("ij,ij->i", query, query)
        sim = 2.0 * sim - tn[None, :] - qn[:, None]  # -|q - t|^2
    if xp is np:
        best = np.maximum.reduceat(sim, starts, axis=1)  # (q, m): the best token per point
        return best.sum(axis=0, dtype=np.float64)
    return _device_segment_max(xp, sim, starts).sum(axis=1, dtype=xp.float64)


def _device_segment_max(xp: Any, sim: Any, starts: Any) -> Any:
    """(m, q) best similarity per point and query token, on the device."""
    import cupyx  # noqa: PLC0415 - only ever with cupy arrays, inside gpu/

    seg = xp.zeros(sim.shape[1], xp.int32)  # each token's point: a cumsum of row starts
    seg[starts[1:]] = 1
    seg = xp.cumsum(seg, dtype=xp.int32)
    best = xp.full((len(starts), sim.shape[0]), -xp.inf, sim.dtype)
    cupyx.scatter_max(best, seg, xp.ascontiguousarray(sim.T))
    return best
