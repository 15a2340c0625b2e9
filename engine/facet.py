"""Facet counts (POST /collections/{c}/facet): points per value of an indexed payload key.

Qdrant facets read a payload index of a matching kind (keyword, integer, bool, uuid), so only
the values that index would hold count: strings for keyword, integers for integer, booleans
for bool, UUID strings (canonical form) for uuid. A point counts once per distinct value.
Hits are ordered by count descending, then value ascending. Counting is numpy over the
payload columns (engine/columns.py): distinct (row, value) pairs, then counts per value
(a bincount over string codes and booleans, a sort for integers).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.columns import KIND_BOOL, KIND_INT, KIND_STR, ColumnData
from engine.errors import BadInput
from engine.filters import Predicate
from engine.tables import segment_mask
from engine.view import View

FACET_INDEX_TYPES = ("keyword", "integer", "bool", "uuid")
DEFAULT_LIMIT = 10


@dataclass(frozen=True)
class FacetRequest:
    key: str
    limit: int = DEFAULT_LIMIT
    pred: Predicate | None = None
    exact: bool = False  # counts are always exact here (Qdrant may estimate when false)


def _missing_index(key: str) -> BadInput:
    return BadInput(
        f"No appropriate index for faceting: `{key}`. Please create one to facet on this "
        "field. Check https://qdrant.tech/documentation/concepts/indexing/#payload-index to "
        "see which payload schemas support Match conditions")


def _index_kind(view: View, key: str) -> str | None:
    entry = view.payload_schema.get(key)
    if not entry or entry.get("type") not in FACET_INDEX_TYPES:
        return None
    params = entry.get("params")
    if entry["type"] == "integer" and isinstance(params, dict) and params.get("lookup") is False:
        return None  # an integer index without its value map serves ranges only
    return str(entry["type"])


def facet(view: View, req: FacetRequest) -> list[dict[str, Any]]:
    kind = _index_kind(view, req.key)
    if kind is None:
        if any(seg.live_count() for seg, _ in view.segments):
            raise _missing_index(req.key)
        return []  # Qdrant: a segment without points answers before looking for the index
    values, counts = [], []
    for seg, n in view.segments:
        mask = segment_mask(view, seg, n, req.pred)
        got = _segment_counts(seg.column(req.key), mask, n, kind)
        if got is not None:
            values.append(got[0])
            counts.append(got[1])
    if not values:
        return []
    vals, inverse = np.unique(np.concatenate(values), return_inverse=True)  # sorted values
    totals = np.bincount(inverse.ravel(), weights=np.concatenate(counts)).astype(np.int64)
    order = np.argsort(-totals, kind="stable")[:req.limit]  # count desc, then value asc
    return [{"value": v, "count": c}
            for v, c in zip(vals[order].tolist(), totals[order].tolist(), strict=True)]


def _segment_counts(col: ColumnData, mask: np.ndarray, n: int, kind: str
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """(distinct values, points per value) of one segment's matching rows."""
    rows = col.rows
    sel = rows < n
    sel[sel] = mask[rows[sel]]
    if kind == "integer":
        sel &= col.kinds == KIND_INT
        vals: np.ndarray = col.ints[sel]
    elif kind == "bool":
        sel &= col.kinds == KIND_BOOL
        vals = col.nums[sel] != 0
    else:
        sel &= col.kinds == KIND_STR
        vals = col.codes[sel].astype(np.int64)
    rows = rows[sel]
    if not len(rows):
        return None
    # one count per point and value: drop repeated (row, value) pairs (arrays like [a, a])
    small = kind != "integer"
    pair_rows, pair_vals = _distinct_pairs(rows, vals.astype(np.int64), small)
    if small:  # codes: a bincount, no sort
        cnt = np.bincount(pair_vals)
        uniq = np.flatnonzero(cnt)
        cnt = cnt[uniq]
    else:
        uniq, cnt = _sorted_counts(pair_vals)
    if kind == "bool":
        return uniq.astype(bool), cnt
    if kind == "integer":
        return uniq, cnt
    strings = np.asarray(col.vocab.values, dtype=object)[uniq]  # per distinct value
    if kind == "uuid":
        canon = np.array([_canonical_uuid(s) for s in strings.tolist()], dtype=object)
        ok = canon != None  # noqa: E711 - elementwise over an object array
        strings, cnt = canon[ok], cnt[ok]
        if not len(strings):
            return None
        # two spellings of one UUID in a point: still one count (rare: merge per point)
        if len(set(strings.tolist())) < len(strings):
            return _uuid_recount(pair_rows, pair_vals, uniq, canon)
    return strings.astype(str), cnt


def _distinct_pairs(rows: np.ndarray, vals: np.ndarray, small: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (row, value) pairs as (rows, values). `small`: values are codes in
    [0, 2^31), so one int64 key per pair sorts faster than a lexsort of two columns."""
    if len(rows) < 2 or bool((rows[1:] > rows[:-1]).all()):
        return rows, vals  # one value per point (no arrays, rows ascending): nothing to drop
    if np.bincount(rows).max() <= 1:
        return rows, vals
    if small:
        span = int(vals.max()) + 1
        key = np.sort(rows * span + vals)
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[1:] != key[:-1]
        key = key[first]
        return key // span, key % span
    order = np.lexsort((vals, rows))
    r, v = rows[order], vals[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (v[1:] != v[:-1])
    return r[first], v[first]


def _sorted_counts(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ascending, occurrences): a sort and run lengths."""
    v = np.sort(vals)
    starts = np.flatnonzero(np.concatenate([[True], v[1:] != v[:-1]]))
    return v[starts], np.diff(np.append(starts, len(v)))


def _canonical_uuid(s: str) -> str | None:
    try:
        return str(uuid.UUID(s))
    except ValueError:
        return None


def _uuid_recount(pair_rows: np.ndarray, pair_vals: np.ndarray, uniq: np.ndarray,
                  canon: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Counts when several vocabulary strings name the same UUID: map each code to its
    canonical UUID first, then count distinct (row, UUID) pairs."""
    ok = canon != None  # noqa: E711
    names, ids = np.unique(canon[ok].astype(str), return_inverse=True)
    code_to = np.full(len(uniq), -1, np.int64)
    code_to[np.flatnonzero(ok)] = ids.ravel()
    mapped = code_to[np.searchsorted(uniq, pair_vals)]
    keep = mapped >= 0
    _, vals = _distinct_pairs(pair_rows[keep], mapped[keep], True)
    got, cnt = np.unique(vals, return_counts=True)
    return (names[got], cnt) if len(got) else None
