"""Qdrant filters → boolean row masks, evaluated with numpy over payload columns.

`parse_filter` validates the whole filter up front (a malformed filter is a 400 before any
data is touched) and returns a compiled predicate; calling it on a table gives a bool mask
with one entry per row. Every condition is a vectorised operation over a column's entries
followed by one scatter into the row mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol, cast

import numpy as np

from engine.columns import (
    I64_MAX,
    I64_MIN,
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_NULL,
    ColumnData,
    parse_datetime,
    tokenize,
)
from engine.errors import BadRequest
from engine.geo import GEO_CONDITIONS, GeoTest, parse_geo
from engine.ids import parse_id
from engine.payload import parse_path


class FilterTable(Protocol):
    n: int

    def column(self, path: str) -> ColumnData: ...
    def nested(self, path: str) -> tuple[FilterTable, np.ndarray]: ...
    def id_rows(self, ids: list[Any]) -> np.ndarray: ...
    def vector_mask(self, name: str) -> np.ndarray: ...
    def index_type(self, path: str) -> str | None: ...


Predicate = Callable[[FilterTable], np.ndarray]
FILTER_KEYS = {"must", "should", "must_not", "min_should"}


def _as_list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, dict):
        return [v]  # Qdrant accepts a single condition in place of a list
    if isinstance(v, list):
        return v
    raise BadRequest(f"`{what}` must be a list of conditions")


def parse_filter(obj: Any) -> Predicate | None:
    """None for no filter (match everything)."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise BadRequest("filter must be an object")
    unknown = set(obj) - FILTER_KEYS
    if unknown:
        raise BadRequest(f"unknown filter field(s): {', '.join(sorted(unknown))}")
    must = [_condition(c) for c in _as_list(obj.get("must"), "must")]
    should = [_condition(c) for c in _as_list(obj.get("should"), "should")]
    must_not = [_condition(c) for c in _as_list(obj.get("must_not"), "must_not")]
    min_should = None
    ms = obj.get("min_should")
    if ms is not None:
        if not isinstance(ms, dict) or not isinstance(ms.get("min_count"), int):
            raise BadRequest("`min_should` needs `conditions` and an integer `min_count`")
        if ms["min_count"] < 1:
            raise BadRequest(f"min_count value {ms['min_count']} is invalid. Must be 1 or larger.")
        min_should = ([_condition(c) for c in _as_list(ms.get("conditions"), "conditions")],
                      ms["min_count"])

    def run(t: FilterTable) -> np.ndarray:
        mask = np.ones(t.n, dtype=bool)
        for c in must:
            mask &= c(t)
        if should:
            any_ = np.zeros(t.n, dtype=bool)
            for c in should:
                any_ |= c(t)
            mask &= any_
        for c in must_not:
            mask &= ~c(t)
        if min_should is not None:
            conds, k = min_should
            counts = np.zeros(t.n, dtype=np.int32)
            for c in conds:
                counts += c(t)
            mask &= counts >= k
        return mask

    if must and not (should or must_not or min_should is not None):
        _with_rows(run, _all_rows(must))
    return run


# ---- rows straight from payload indexes ------------------------------------------------------
#
# Some predicates also carry `rows(table)`: exactly the rows they match (unsorted, maybe
# repeated, maybe beyond table.n), read from an indexed field's sorted entries, or None when
# that is not possible here (no index on the field). A selective filter then costs about its
# matches, not a pass over the segment (engine/tables.index_rows).

RowsFn = Callable[[FilterTable], "np.ndarray | None"]


def _with_rows(pred: Predicate, rows: RowsFn) -> Predicate:
    pred.rows = rows  # type: ignore[attr-defined]
    return pred


def candidate_rows(pred: Predicate | None, t: FilterTable) -> np.ndarray | None:
    """The rows `pred` matches, from payload indexes (see above); None: evaluate the mask."""
    fn = getattr(pred, "rows", None)
    return None if fn is None else fn(t)


def _all_rows(conds: list[Predicate]) -> RowsFn:
    """Rows of a conjunction: each condition's rows, intersected (all must have rows)."""
    fns = [getattr(c, "rows", None) for c in conds]
    if any(f is None for f in fns):
        return lambda t: None
    if len(fns) == 1:  # one condition (the usual filter): its own rows, no extra frame
        return cast(RowsFn, fns[0])

    def rows(t: FilterTable) -> np.ndarray | None:
        out: np.ndarray | None = None
        for f in fns:
            got = f(t)  # type: ignore[misc]
            if got is None:
                return None
            out = got if out is None else np.intersect1d(out, got)
        return out

    return rows


def _indexed(t: FilterTable, key: str) -> ColumnData | None:
    """The column of an indexed field (an index is what makes sorted entries worth keeping)."""
    return t.column(key) if t.index_type(key) is not None else None


def _value_rows(key: str, values: list[Any]) -> RowsFn:
    """Rows equal to any of the keyword / integer values (match value, match any)."""
    strs = [v for v in values if isinstance(v, str)]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)
            and I64_MIN <= v <= I64_MAX]

    def rows(t: FilterTable) -> np.ndarray | None:
        col = _indexed(t, key)
        if col is None:
            return None
        parts = []
        if strs:
            codes = [c for c in (col.vocab.index.get(v) for v in strs) if c is not None]
            if codes:
                parts.append(_equal(col.sorted_entries("code"), codes))
        if ints:
            parts.append(_equal(col.sorted_entries("int"), ints))
        if not parts:
            return np.empty(0, np.int64)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return rows


def _equal(entries: tuple[np.ndarray, np.ndarray], values: list[Any]) -> np.ndarray:
    vals, rows = entries
    want = np.asarray(values, dtype=vals.dtype)
    lo = np.searchsorted(vals, want, "left")
    hi = np.searchsorted(vals, want, "right")
    if len(want) == 1:
        return rows[int(lo[0]) : int(hi[0])]
    return np.concatenate([rows[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])


def _range_rows(key: str, bounds: dict[str, Any]) -> RowsFn:
    """Rows of a numeric range: a slice of the sorted integers (compared exactly, as `_range`)
    and one of the sorted floats."""
    def rows(t: FilterTable) -> np.ndarray | None:
        col = _indexed(t, key)
        if col is None:
            return None
        ints, irows = col.sorted_entries("int")
        floats, frows = col.sorted_entries("float")
        ilo, ihi, flo, fhi = 0, len(ints), 0, len(floats)
        for op, bound in bounds.items():
            lower = op in ("gt", "gte")
            side: Literal["left", "right"] = "right" if op in ("gt", "lte") else "left"
            fb = float(bound)
            if fhi:  # no float entries (an integer field): nothing to search
                # the array method: np.searchsorted's dispatch wrapper costs as much (cProfile)
                at = int(floats.searchsorted(fb, side))
                flo, fhi = (max(flo, at), fhi) if lower else (flo, min(fhi, at))
            if math.isfinite(fb):
                at = int(ints.searchsorted(_int_bound(op, bound), side))
            else:  # -inf lies below every integer, +inf above
                at = 0 if fb < 0 else len(ints)
            ilo, ihi = (max(ilo, at), ihi) if lower else (ilo, min(ihi, at))
        if flo >= fhi:  # one kind matched (the usual case): its slice, no concatenation
            return irows[ilo:max(ilo, ihi)]
        return np.concatenate([irows[ilo:max(ilo, ihi)], frows[flo:max(flo, fhi)]])

    return rows


def _condition(c: Any) -> Predicate:
    if not isinstance(c, dict):
        raise BadRequest(f"invalid filter condition: {c!r}")
    if "key" in c:
        return _field_condition(c)
    if "is_empty" in c:
        return _is_empty(_key_of(c["is_empty"], "is_empty"))
    if "is_null" in c:
        return _is_null(_key_of(c["is_null"], "is_null"))
    if "has_id" in c:
        ids = c["has_id"]
        if not isinstance(ids, list):
            raise BadRequest("`has_id` must be a list of point ids")
        parsed = [parse_id(i) for i in ids]
        return _with_rows(lambda t: _rows_mask(t.id_rows(parsed), t.n),
                          lambda t: t.id_rows(parsed))
    if "has_vector" in c:
        name = c["has_vector"]
        if not isinstance(name, str):
            raise BadRequest("`has_vector` must be a vector name")
        return lambda t: t.vector_mask(name)
    if "nested" in c:
        return _nested(c["nested"])
    if set(c) & FILTER_KEYS or not c:
        sub = parse_filter(c)
        return sub if sub is not None else (lambda t: np.ones(t.n, dtype=bool))
    raise BadRequest(f"unknown filter condition: {sorted(c)}")


def _key_of(obj: Any, what: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise BadRequest(f"`{what}` needs a `key`")
    parse_path(obj["key"])
    return obj["key"]


def _rows_mask(rows: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[rows] = True
    return out


def _nested(obj: Any) -> Predicate:
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise BadRequest("`nested` needs `key` and `filter`")
    key = obj["key"]
    parse_path(key)
    key = key[:-2] if key.endswith("[]") else key  # `a` and `a[]` mean the same here
    inner = parse_filter(obj.get("filter") or {})

    def run(t: FilterTable) -> np.ndarray:
        child, parent = t.nested(key)
        sub = inner(child) if inner is not None else np.ones(child.n, dtype=bool)
        return _rows_mask(parent[sub], t.n)

    return run


def _is_empty(key: str) -> Predicate:
    return lambda t: ~t.column(key).non_empty(t.n)


def _is_null(key: str) -> Predicate:
    def run(t: FilterTable) -> np.ndarray:
        col = t.column(key)
        return col.rows_where(col.kinds == KIND_NULL, t.n)

    return run


def _field_condition(c: dict[str, Any]) -> Predicate:
    key = c["key"]
    if not isinstance(key, str):
        raise BadRequest("condition `key` must be a string")
    parse_path(key)
    parts: list[Predicate] = []
    if c.get("match") is not None:
        parts.append(_match(key, c["match"]))
    if c.get("range") is not None:
        parts.append(_range(key, c["range"]))
    if c.get("values_count") is not None:
        parts.append(_values_count(key, c["values_count"]))
    if c.get("is_empty") is not None:
        want = bool(c["is_empty"])
        base = _is_empty(key)
        parts.append(base if want else (lambda t: ~base(t)))
    if c.get("is_null") is not None:
        want = bool(c["is_null"])
        base = _is_null(key)
        parts.append(base if want else (lambda t: ~base(t)))
    for geo in GEO_CONDITIONS:
        if c.get(geo) is not None:
            parts.append(_geo(key, parse_geo(geo, c[geo])))
    if not parts:
        raise BadRequest(f"field condition on `{key}` has no condition (match, range, ...)")
    if len(parts) == 1:
        return parts[0]

    def run(t: FilterTable) -> np.ndarray:
        mask = parts[0](t)
        for p in parts[1:]:
            mask &= p(t)
        return mask

    return _with_rows(run, _all_rows(parts))


def _geo(key: str, test: GeoTest) -> Predicate:
    """Rows with some geo point at `key` inside the shape (index or not: same column)."""
    def run(t: FilterTable) -> np.ndarray:
        col = t.column(key)
        if not len(col.geo_rows):
            return np.zeros(t.n, dtype=bool)
        return col.rows_where_geo(test(col.geo_lat, col.geo_lon), t.n)

    return run


# ---- match --------------------------------------------------------------------------------


def _value_selector(v: Any) -> Callable[[ColumnData], np.ndarray]:
    """Entries of a column equal to a keyword/integer/bool value."""
    if isinstance(v, bool):
        return lambda col: (col.kinds == KIND_BOOL) & (col.nums == float(v))
    if isinstance(v, int):
        if not I64_MIN <= v <= I64_MAX:
            return lambda col: np.zeros(len(col.rows), dtype=bool)
        return lambda col: (col.kinds == KIND_INT) & (col.ints == v)
    if isinstance(v, float):
        raise BadRequest("match value must be a string, integer or bool (floats cannot be matched)")
    if isinstance(v, str):
        def sel(col: ColumnData) -> np.ndarray:
            code = col.vocab.index.get(v)
            if code is None:
                return np.zeros(len(col.rows), dtype=bool)
            return col.codes == code
        return sel
    raise BadRequest(f"match value must be a string, integer or bool, got {v!r}")


def _any_selector(values: list[Any]) -> Callable[[ColumnData], np.ndarray]:
    if not isinstance(values, list):
        raise BadRequest("match `any`/`except` must be a list")
    strs = [v for v in values if isinstance(v, str)]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if len(strs) + len(ints) != len(values):
        raise BadRequest("match `any`/`except` values must be strings or integers")

    def sel(col: ColumnData) -> np.ndarray:
        out = np.zeros(len(col.rows), dtype=bool)
        if strs:
            codes = [c for c in (col.vocab.index.get(s) for s in strs) if c is not None]
            if codes:
                out |= np.isin(col.codes, np.array(codes, dtype=np.int32))
        if ints:
            exact = np.array([i for i in ints if I64_MIN <= i <= I64_MAX], dtype=np.int64)
            out |= (col.kinds == KIND_INT) & np.isin(col.ints, exact)
        return out

    return sel


def _text_selector(text: Any, mode: str) -> Callable[[ColumnData, str | None], np.ndarray]:
    """Full-text style matches, decided once per distinct string value, then mapped to entries.

    As in Qdrant: with a full-text index, `text` matches when every query token is present;
    without one it is an exact substring match.
    """
    if not isinstance(text, str):
        raise BadRequest(f"match `{mode}` must be a string")
    q_tokens = tokenize(text)
    q_set = frozenset(q_tokens)

    def decide(col: ColumnData, index_type: str | None) -> np.ndarray:
        vocab = col.vocab
        if not vocab.values:
            return np.zeros(0, dtype=bool)
        if mode == "text" and index_type != "text":
            if not text:
                return np.zeros(len(vocab.values), dtype=bool)
            return np.strings.find(vocab.strings(), text) >= 0
        if mode == "prefix":
            return np.strings.startswith(vocab.strings(), text)
        if mode == "substring":
            return np.strings.find(vocab.strings(), text) >= 0
        if not q_tokens:
            return np.zeros(len(vocab.values), dtype=bool)
        if mode == "text":
            return np.fromiter((q_set <= t for t in vocab.token_sets()), bool, len(vocab.values))
        if mode == "text_any":
            return np.fromiter((not q_set.isdisjoint(t) for t in vocab.token_sets()), bool,
                               len(vocab.values))
        return np.fromiter((_has_phrase(t, q_tokens) for t in vocab.token_lists()), bool,
                           len(vocab.values))

    def sel(col: ColumnData, index_type: str | None) -> np.ndarray:
        hit = decide(col, index_type)
        if hit.size == 0:
            return np.zeros(len(col.rows), dtype=bool)
        return (col.codes >= 0) & hit[np.maximum(col.codes, 0)]

    return sel


def _has_phrase(doc: list[str], phrase: list[str]) -> bool:
    m = len(phrase)
    return any(doc[i : i + m] == phrase for i in range(len(doc) - m + 1))


def _match(key: str, m: Any) -> Predicate:
    if not isinstance(m, dict) or not m:
        raise BadRequest(f"invalid match for `{key}`: {m!r}")
    rows: RowsFn | None = None
    if "value" in m:
        plain = _value_selector(m["value"])
        if not isinstance(m["value"], bool):
            rows = _value_rows(key, [m["value"]])
    elif "any" in m:
        plain = _any_selector(m["any"])
        rows = _value_rows(key, m["any"])
    elif "except" in m:
        ex = _any_selector(m["except"])

        # `except`: some non-null value equal to none of the listed values.
        def plain(col: ColumnData) -> np.ndarray:
            return (col.kinds != KIND_NULL) & ~ex(col)
    else:
        mode = next((k for k in TEXT_MODES if k in m), None)
        if mode is None:
            raise BadRequest(f"unknown match type for `{key}`: {sorted(m)}")
        text_sel = _text_selector(m[mode], mode)

        def run_text(t: FilterTable) -> np.ndarray:
            col = t.column(key)
            return col.rows_where(text_sel(col, t.index_type(key)), t.n)

        return run_text

    def run(t: FilterTable) -> np.ndarray:
        col = t.column(key)
        return col.rows_where(plain(col), t.n)

    return run if rows is None else _with_rows(run, rows)


TEXT_MODES = ("text", "phrase", "text_any", "prefix", "substring")


# ---- range / values_count ------------------------------------------------------------------

_OPS = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}


def _bounds(r: Any, what: str) -> tuple[dict[str, Any], bool]:
    if not isinstance(r, dict):
        raise BadRequest(f"`{what}` must be an object")
    unknown = set(r) - set(_OPS)
    if unknown:
        raise BadRequest(f"unknown `{what}` field(s): {sorted(unknown)}")
    out: dict[str, Any] = {}
    is_dt = False
    for k, v in r.items():
        if v is None:
            continue
        if isinstance(v, bool):
            raise BadRequest(f"`{what}.{k}` must be a number or datetime")
        if isinstance(v, int | float):
            if isinstance(v, float) and math.isnan(v):
                raise BadRequest(f"`{what}.{k}` must not be NaN")
            out[k] = v  # ints stay exact: large integer payloads compare exactly
        elif isinstance(v, str):
            ts = parse_datetime(v)
            if math.isnan(ts):
                # a string bound makes a datetime range: on any other field it must be a number
                raise BadRequest(f"`{what}.{k}` must be a number, or an RFC 3339 datetime for "
                                 f"a datetime range; {v!r} is neither")
            out[k] = ts
            is_dt = True
        else:
            raise BadRequest(f"`{what}.{k}` must be a number or datetime")
    if is_dt and any(not isinstance(r[k], str) for k in out):
        # Qdrant's range is either numeric or datetime as a whole, never a mix
        raise BadRequest(f"`{what}` bounds must be all numbers or all datetimes")
    return out, is_dt


def _range(key: str, r: Any) -> Predicate:
    bounds, is_dt = _bounds(r, "range")

    def run(t: FilterTable) -> np.ndarray:
        col = t.column(key)
        if is_dt:
            dates = col.vocab.datetimes()
            vals = np.where(col.codes >= 0, dates[np.maximum(col.codes, 0)] if len(dates)
                            else np.nan, np.nan)
            sel = ~np.isnan(vals)
            for op, bound in bounds.items():
                sel &= _OPS[op](vals, bound)
            return col.rows_where(sel, t.n)
        is_int = col.kinds == KIND_INT
        floats = np.where(col.kinds == KIND_FLOAT, col.nums, np.nan)
        sel_f = ~np.isnan(floats)
        sel_i = is_int.copy()
        for op, bound in bounds.items():
            sel_f &= _OPS[op](floats, bound)
            # integers compare exactly against the integer nearest the bound on the right side
            sel_i &= _OPS[op](col.ints, _int_bound(op, bound)) if math.isfinite(bound) \
                else _OPS[op](col.nums, bound)
        return col.rows_where(sel_f | (is_int & sel_i), t.n)

    return run if is_dt else _with_rows(run, _range_rows(key, bounds))


def _int_bound(op: str, bound: float) -> int:
    """x op bound ⇔ x op' k for integers x: gt/lte use floor(bound), gte/lt use ceil(bound)."""
    k = math.floor(bound) if op in ("gt", "lte") else math.ceil(bound)
    return max(I64_MIN, min(I64_MAX, k))


def _values_count(key: str, r: Any) -> Predicate:
    bounds, is_dt = _bounds(r, "values_count")
    if is_dt or any(isinstance(b, float) or b < 0 for b in bounds.values()):
        # Qdrant's counts are unsigned integers (usize)
        raise BadRequest("`values_count` bounds must be non-negative integers")
    zero_ok = all(_OPS[op](0, b) for op, b in bounds.items())

    def run(t: FilterTable) -> np.ndarray:
        col = t.column(key)
        sel = np.ones(len(col.counts), dtype=bool)
        for op, bound in bounds.items():
            sel &= _OPS[op](col.counts, bound)
        mask = col.rows_where_counts(sel, t.n)
        if zero_ok:  # a path that resolves to nothing counts as a single 0
            mask |= ~col.has_values(t.n)
        return mask

    return run
