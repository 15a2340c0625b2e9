"""Filters over segments: the FilterTable a Predicate evaluates on, and per-segment masks.

A filter becomes one boolean mask per segment (numpy over payload columns); masks of a
repeated filter are cached per segment state (see `segment_mask_count`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np

from engine import payload as payload_ops
from engine.columns import Column, ColumnData
from engine.filters import Predicate, candidate_rows
from engine.ids import PointId, ids_to_records
from engine.segment import Segment
from engine.view import View

# A filter matching more than this fraction of a segment is evaluated as a mask even when
# payload indexes could list its rows (listing and sorting them would cost more).
INDEX_ROWS_FRACTION = 0.25
# Observability for benchmarks and tests: how filters were answered (approximate under
# concurrency; never used for decisions).
STATS = {"index_rows": 0, "masks_evaluated": 0, "mask_cache_hits": 0}


class SegmentTable:
    """A segment's first `n` rows as a FilterTable."""

    def __init__(self, view: View, seg: Segment, n: int) -> None:
        self.view, self.seg, self.n = view, seg, n

    def column(self, path: str) -> ColumnData:
        return self.seg.column(path)

    def nested(self, path: str) -> tuple[Any, np.ndarray]:
        elems, parents = self.seg.nested_elements(path, self.n)
        return ElementTable(elems), parents

    def id_rows(self, ids: list[PointId]) -> np.ndarray:
        sid = self.seg.seg_id
        if self.view.live.get(sid) is not self.seg:
            # the segment was swapped by a vacuum after this view was taken: match by value
            want = ids_to_records(ids)
            rows = np.flatnonzero(np.isin(self.seg.id_recs[: self.n], want))
            return rows[~self.seg.deleted[rows]]
        return self.view.ids.rows_in(sid, ids, self.n)

    def vector_mask(self, name: str) -> np.ndarray:
        p = self.seg.present.get(name)
        return p[: self.n].copy() if p is not None else np.zeros(self.n, dtype=bool)

    def index_type(self, path: str) -> str | None:
        return self.view.index_type(path)


class ElementTable:
    """Array elements under a `nested` key, one row per dict element (built per payload version)."""

    payload_version = 0

    def __init__(self, elems: list[dict[str, Any]]) -> None:
        self.elems = elems
        self.n = len(elems)
        self._cols: dict[str, Column] = {}

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
        return ElementTable(elems), np.array(parents, dtype=np.int64)

    def id_rows(self, ids: list[PointId]) -> np.ndarray:
        return np.empty(0, np.int64)  # has_id never matches inside `nested` (as in Qdrant)

    def vector_mask(self, name: str) -> np.ndarray:
        return np.zeros(self.n, dtype=bool)

    def index_type(self, path: str) -> str | None:
        return None


def segment_mask(view: View, seg: Segment, n: int, pred: Predicate | None,
                 vector: str | None = None) -> np.ndarray:
    """Rows passing deletion, vector presence and the filter (read-only: may be cached)."""
    return segment_mask_count(view, seg, n, pred, vector)[0]


def segment_mask_count(view: View, seg: Segment, n: int, pred: Predicate | None,
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
        schema = tuple(sorted((f, str(e.get("type"))) for f, e in view.payload_schema.items()))
        key = (cache_key, vector, n, seg.mask_version, seg.payload_version, schema)
        hit = seg.filter_cache.get(key)
        if hit is not None:
            STATS["mask_cache_hits"] += 1
            return hit
    STATS["masks_evaluated"] += 1
    mask = mask & pred(SegmentTable(view, seg, n))
    mask.setflags(write=False)
    result = (mask, int(np.count_nonzero(mask)))
    if key is not None:
        seg.remember_filter(key, result)
    return result


def index_rows(view: View, seg: Segment, n: int, pred: Predicate | None,
               vector: str | None = None) -> np.ndarray | None:
    """The rows (ascending) passing deletion, vector presence and a selective filter, read
    from payload indexes without a segment-sized mask — what qdrant-edge does below its
    full-scan threshold. None: the filter cannot be answered that way, or it matches more
    than INDEX_ROWS_FRACTION of the segment (a mask is as cheap then, and the graph needs one).
    """
    cand = candidate_rows(pred, SegmentTable(view, seg, n))
    if cand is None or len(cand) > n * INDEX_ROWS_FRACTION:
        return None
    rows = cand.copy()  # ascending, each once (array payloads repeat rows); the array
    rows.sort()  # methods: numpy's function dispatch costs as much as a ~100-row sort
    if len(rows) > 1 and not (rows[1:] != rows[:-1]).all():
        rows = rows[np.concatenate(([True], rows[1:] != rows[:-1]))]
    if len(rows) and rows[-1] >= n:  # the column may run ahead of this view
        rows = rows[: int(rows.searchsorted(n))]
    live, allowed = seg.live_mask(n, vector)
    if allowed < n:
        rows = rows[live[rows]]
    STATS["index_rows"] += 1
    return rows


def rows_mask(rows: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    mask.setflags(write=False)
    return mask


def selected_segments(view: View, pred: Predicate | None, vector: str, cache_key: str = ""
                      ) -> Iterator[tuple[Segment, int, np.ndarray | None, np.ndarray | None,
                                          int]]:
    """(segment, rows, mask, listed, allowed) for each segment with rows that pass deletion,
    the vector's presence and the filter — the segments a search reads (touched: recently
    used). A selective filter on indexed fields comes as `listed` (ascending allowed rows,
    mask None); otherwise as `mask` (listed None)."""
    for seg, n in view.segments:
        if n == 0:
            continue
        listed = index_rows(view, seg, n, pred, vector) if pred is not None else None
        if listed is not None:
            mask, allowed = None, len(listed)
        else:
            mask, allowed = segment_mask_count(view, seg, n, pred, vector, cache_key)
        if allowed == 0:
            continue
        seg.touch()
        yield seg, n, mask, listed, allowed


def searched_segments(view: View, pred: Predicate | None, vector: str, cache_key: str = ""
                      ) -> Iterator[tuple[Segment, int, np.ndarray, int]]:
    """(segment, rows, mask, allowed): `selected_segments` with every selection a mask."""
    for seg, n, mask, listed, allowed in selected_segments(view, pred, vector, cache_key):
        full = mask if mask is not None else rows_mask(cast(np.ndarray, listed), n)
        yield seg, n, full, allowed


def filtered_ids(view: View, pred: Predicate | None) -> list[PointId]:
    out: list[PointId] = []
    for seg, n in view.segments:
        rows = np.flatnonzero(segment_mask(view, seg, n, pred))
        out.extend(seg.ids[r] for r in rows.tolist())
    return out
