"""Search through a segment's quantized codes: scan → oversampled candidates → rescore.

The codes (engine.quantization.QuantizedRows) cover a segment's leading rows; the scan picks
`ceil(k · oversampling)` candidates per query by approximate score (gpu/quantized.py), and
rescoring gathers just those rows' original vectors and scores them exactly, keeping the
best k. Rows appended after the codes were built (the tail) are scanned exactly, as the
unindexed tail of an HNSW segment is, and the two results merge.

Qdrant's `params.quantization`: `ignore` searches the originals; `rescore` (default: true)
re-scores with the originals, false returns the approximate scores; `oversampling` (≥ 1,
default 1) widens the candidate set. `params.exact` bypasses quantization too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.quantization import QuantizedRows, QuantSearch
from engine.segment import Segment
from gpu.device import DeviceFailure
from gpu.topk import NEG_INF, merge

DEFAULT = QuantSearch()


def applies(seg: Segment, name: str, specs: list[Any]) -> QuantizedRows | None:
    """The segment's codes of vector `name` when this batch of searches should use them."""
    quant = seg.quantized.get(name)
    if quant is None or quant.rows == 0 or specs[0].exact:
        return None
    if all(_params(s).ignore for s in specs):
        return None
    return quant


def _params(spec: Any) -> QuantSearch:
    return getattr(spec, "quantization", None) or DEFAULT


def search(view: Any, seg: Segment, n: int, name: str, queries: np.ndarray, k: int,
           metric: str, mask: np.ndarray, allowed: int, quant: QuantizedRows,
           specs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, rows) of every query over rows [0, n) of the segment, best first;
    searches in one batch may differ in their quantization params (sub-batches)."""
    groups: dict[tuple[bool, bool, float], list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault(_params(s).key, []).append(i)
    sel = None if allowed == n else mask
    if len(groups) == 1:
        (key,) = groups
        return _run(view, seg, n, name, queries, k, metric, sel, quant, key)
    b = len(queries)
    vals = np.full((b, k), NEG_INF, np.float32)
    rows = np.full((b, k), -1, np.int64)
    for key, idx in groups.items():
        v, r = _run(view, seg, n, name, queries[idx], k, metric, sel, quant, key)
        vals[idx, : v.shape[1]] = v
        rows[idx, : r.shape[1]] = r
    return vals, rows


def _run(view: Any, seg: Segment, n: int, name: str, queries: np.ndarray, k: int, metric: str,
         mask: np.ndarray | None, quant: QuantizedRows, key: tuple[bool, bool, float]
         ) -> tuple[np.ndarray, np.ndarray]:
    ignore, rescore, oversampling = key
    if ignore:
        return _exact(view, seg, 0, n, name, queries, k, metric, mask)
    covered = min(quant.rows, n)
    want = max(k, math.ceil(k * oversampling)) if rescore else k
    head_mask = None if mask is None else mask[:covered]
    try:
        vals, rows = quant.scan(queries, want, covered, head_mask)
    except DeviceFailure as exc:  # the codes lived on a failed device: the originals answer
        view.on_device_failure(str(exc))
        return _exact(view, seg, 0, n, name, queries, k, metric, mask)
    if rescore:
        vals, rows = _rescore(seg, name, queries, vals, rows, k, metric)
    if covered < n:
        tail = None if mask is None else mask[covered:n]
        tv, tr = _exact(view, seg, covered, n, name, queries, k, metric, tail)
        tr = np.where(tr >= 0, tr + covered, -1)
        vals, rows = merge([(vals, rows), (tv, tr)], k)
    return vals, rows


def _exact(view: Any, seg: Segment, start: int, n: int, name: str, queries: np.ndarray,
           k: int, metric: str, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if mask is not None and mask.all():
        mask = None
    try:
        return seg.search(name, start, n, queries, k, metric, mask)
    except DeviceFailure as exc:
        view.on_device_failure(str(exc))
        return seg.search(name, start, n, queries, k, metric, mask)


def _rescore(seg: Segment, name: str, queries: np.ndarray, vals: np.ndarray, rows: np.ndarray,
             k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact similarities of the candidates (their original vectors gathered once), best k."""
    b, c = rows.shape
    if c == 0:
        return vals, rows
    ok = rows >= 0
    uniq, inv = np.unique(np.where(ok, rows, rows.max(initial=0)), return_inverse=True)
    x = seg.vectors_of(name, uniq)[inv.reshape(b, c)]  # (b, c, d) float32
    q = queries.astype(np.float32, copy=False)
    if metric == "ip":
        sims = np.einsum("bcd,bd->bc", x, q)
    elif metric == "l2":
        diff = x - q[:, None, :]
        sims = -np.sqrt(np.einsum("bcd,bcd->bc", diff, diff))
    else:
        sims = -np.abs(x - q[:, None, :]).sum(axis=2)
    sims = np.where(ok, sims, NEG_INF).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(sims, order, axis=1)
    rows = np.take_along_axis(rows, order, axis=1)
    return vals, np.where(np.isfinite(vals), rows, -1)
