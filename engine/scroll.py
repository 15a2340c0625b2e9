"""Scroll (by id, or ordered by a payload field) and count: reads without a query vector."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.columns import KIND_FLOAT, KIND_INT, KIND_STR
from engine.filters import Predicate
from engine.id_tracker import ROW_BITS, ROW_MASK
from engine.ids import PointId, id_order_key
from engine.plan import CountRequest, OrderBy, ScrollRequest
from engine.render import render_handles
from engine.tables import segment_mask
from engine.view import View


def scroll(view: View, req: ScrollRequest) -> tuple[list[dict[str, Any]], PointId | None]:
    """A page of points passing the filter, by id from `req.offset` (or by `order_by`), and
    the id the next page starts at."""
    pred, limit = req.pred, req.limit
    if req.order_by is not None:
        return _scroll_ordered(view, pred, limit, req.order_by, req.with_payload,
                               req.with_vector), None
    start = id_order_key(req.offset) if req.offset is not None else None
    kinds, his, los, handles = [], [], [], []
    for seg, n in view.segments:
        rows = np.flatnonzero(segment_mask(view, seg, n, pred))
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
    return render_handles(view, page, req.with_payload, req.with_vector), nxt


def ordered_entries(view: View, pred: Predicate | None, key: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One entry per numeric/datetime value of `key` on matching points:
    (values as float64, exact ints, is-integer flags, handles). Datetimes are microseconds."""
    vals, ints, is_int, hs = [], [], [], []
    for seg, n in view.segments:
        mask = segment_mask(view, seg, n, pred)
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


def _scroll_ordered(view: View, pred: Predicate | None, limit: int, order_by: OrderBy,
                    with_payload: Any, with_vector: Any) -> list[dict[str, Any]]:
    key, desc, start = order_by.key, order_by.descending, order_by.start_from
    values, ints, is_int, hs = ordered_entries(view, pred, key)
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
    recs = render_handles(view, hs[order].tolist(), with_payload, with_vector)
    for rec, v, i, exact in zip(recs, values[order].tolist(), ints[order].tolist(),
                                is_int[order].tolist(), strict=True):
        rec["order_value"] = i if exact else v
    return recs


def count(view: View, req: CountRequest) -> int:
    pred = req.pred
    total = 0
    for seg, n in view.segments:
        if pred is None:
            total += int(n - np.count_nonzero(seg.deleted[:n]))
        else:
            total += int(np.count_nonzero(segment_mask(view, seg, n, pred)))
    return total
