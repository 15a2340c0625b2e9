"""engine/filters.py in process: parse_filter compiles a Qdrant filter into a predicate, which
is evaluated on a small fake FilterTable (payload rows, ids, vector presence, index types);
malformed filters are refused with BadRequest before any data is touched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.columns import Column, ColumnData
from engine.errors import BadRequest
from engine.filters import parse_filter
from engine.payload import raw_values_at

UUID = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
BIG = 2**53 + 1  # not representable as a float64: integers must compare exactly

PAYLOADS: list[dict[str, Any]] = [
    {"city": "Berlin", "n": 1, "price": 10.5, "tags": ["a", "b"], "ok": True,
     "when": "2024-01-01T00:00:00Z",
     "items": [{"x": 1, "c": "red"}, {"x": 2, "c": "blue"}]},
    {"city": "London", "n": 2, "price": 20.0, "tags": ["b"], "ok": False, "when": "2024-06-01",
     "items": [{"x": 1, "c": "blue"}]},
    {"city": "Berlin", "n": 3, "tags": [], "ok": None, "desc": "quick brown fox"},
    {"city": None, "n": BIG, "desc": "the fox is quick"},
    {},
    {"city": ["Paris", "Berlin"], "n": 4.5, "tags": ["c"]},
]
IDS: list[Any] = [10, 11, UUID, 13, 14, 15]


class FakeTable:
    """A FilterTable over plain payload dicts, with the PayloadSource side Column.sync needs
    (row count, payload per row, payload version and which rows changed since a version)."""

    def __init__(self, payloads: list[dict[str, Any]], ids: list[Any] | None = None,
                 vectors: dict[str, list[bool]] | None = None,
                 index_types: dict[str, str] | None = None) -> None:
        self.payloads = [dict(p) for p in payloads]
        self.n = len(self.payloads)
        self.ids = ids if ids is not None else list(range(self.n))
        self.vectors = vectors or {}
        self.index_types = index_types or {}
        self.payload_version = 0
        self._changes: list[tuple[int, int]] = []  # (version after the change, row)
        self._cols: dict[str, Column] = {}

    # PayloadSource
    def payload_rows(self) -> int:
        return self.n

    def payload_at(self, row: int) -> dict[str, Any]:
        return self.payloads[row]

    def payload_changes_since(self, version: int) -> np.ndarray | None:
        return np.array([r for v, r in self._changes if v > version], dtype=np.int64)

    # writes, as a segment sees them
    def set_payload(self, row: int, payload: dict[str, Any]) -> None:
        self.payloads[row] = payload
        self.payload_version += 1
        self._changes.append((self.payload_version, row))

    def append(self, payload: dict[str, Any], point_id: Any) -> None:
        self.payloads.append(payload)
        self.ids.append(point_id)
        self.n += 1

    # FilterTable
    def column(self, path: str) -> ColumnData:
        col = self._cols.setdefault(path, Column(path))
        return col.sync(self)

    def nested(self, path: str) -> tuple[FakeTable, np.ndarray]:
        elems: list[dict[str, Any]] = []
        parents: list[int] = []
        for row, p in enumerate(self.payloads[: self.n]):
            for v in raw_values_at(p, path):
                if isinstance(v, list):
                    for e in v:
                        if isinstance(e, dict):
                            elems.append(e)
                            parents.append(row)
        return FakeTable(elems, ids=[]), np.array(parents, dtype=np.int64)

    def id_rows(self, ids: list[Any]) -> np.ndarray:
        want = set(ids)
        return np.array([r for r, i in enumerate(self.ids) if i in want], dtype=np.int64)

    def vector_mask(self, name: str) -> np.ndarray:
        return np.array(self.vectors.get(name, [False] * self.n), dtype=bool)

    def index_type(self, path: str) -> str | None:
        return self.index_types.get(path)


def table(**kw: Any) -> FakeTable:
    return FakeTable(PAYLOADS, ids=list(IDS), **kw)


def rows(flt: Any, t: FakeTable | None = None) -> list[int]:
    pred = parse_filter(flt)
    assert pred is not None
    t = t if t is not None else table()
    mask = pred(t)
    assert mask.dtype == bool and mask.shape == (t.n,)
    return np.flatnonzero(mask).tolist()


def match(key: str, **m: Any) -> dict[str, Any]:
    return {"key": key, "match": m}


# ---- no filter, empty filter ------------------------------------------------------------------


def test_none_is_no_filter_and_empty_matches_everything() -> None:
    assert parse_filter(None) is None
    assert rows({}) == [0, 1, 2, 3, 4, 5]
    assert rows({"must": []}) == [0, 1, 2, 3, 4, 5]
    assert rows({"must": [{}]}) == [0, 1, 2, 3, 4, 5]  # an empty sub-filter keeps all


# ---- match ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cond, want", [
    (match("city", value="Berlin"), [0, 2, 5]),  # row 5: one array element matches
    (match("tags", value="b"), [0, 1]),
    (match("city", value="Nowhere"), []),
    (match("n", value=2), [1]),
    (match("n", value=4), []),  # 4.5 is a float, never an integer match
    (match("n", value=BIG), [3]),
    (match("n", value=BIG - 1), []),  # exact, not float-rounded
    (match("n", value=2**70), []),  # beyond i64: matches nothing (and does not fail)
    (match("ok", value=True), [0]),
    (match("ok", value=False), [1]),
    (match("n", value=True), []),  # a bool is not the integer 1
    (match("missing", value="x"), []),
])
def test_match_value(cond: dict[str, Any], want: list[int]) -> None:
    assert rows({"must": [cond]}) == want


@pytest.mark.parametrize("cond, want", [
    (match("city", any=["London", "Paris"]), [1, 5]),
    (match("n", any=[1, 3]), [0, 2]),
    (match("city", any=["Berlin", 2]), [0, 2, 5]),
    (match("city", any=[]), []),
    # except: some non-null value that is none of the listed ones (null and missing never)
    (match("city", **{"except": ["Berlin"]}), [1, 5]),
    (match("n", **{"except": [1, 2, 3]}), [3, 5]),
])
def test_match_any_and_except(cond: dict[str, Any], want: list[int]) -> None:
    assert rows({"must": [cond]}) == want


def test_text_match_is_substring_without_index_and_tokens_with_one() -> None:
    assert rows({"must": [match("desc", text="brown fox")]}) == [2]
    assert rows({"must": [match("desc", text="quick fox")]}) == []  # not a substring
    indexed = table(index_types={"desc": "text"})
    assert rows({"must": [match("desc", text="quick fox")]}, indexed) == [2, 3]
    assert rows({"must": [match("desc", phrase="quick brown")]}, indexed) == [2]
    assert rows({"must": [match("desc", phrase="brown quick")]}, indexed) == []
    assert rows({"must": [match("desc", text_any="brown is")]}, indexed) == [2, 3]
    assert rows({"must": [match("desc", prefix="the")]}) == [3]
    assert rows({"must": [match("desc", substring="ck br")]}) == [2]


# ---- range / values_count --------------------------------------------------------------------


@pytest.mark.parametrize("r, want", [
    ({"gt": 1, "lte": 3}, [1, 2]),
    ({"gte": 4.5}, [3, 5]),
    ({"gt": 2.5}, [2, 3, 5]),
    ({"lt": 1.5}, [0]),
    ({"gte": BIG}, [3]),
    ({"gt": BIG - 1}, [3]),
    ({"gt": BIG}, []),  # exact even where float64 cannot tell BIG from BIG - 1
    ({"lt": float("inf")}, [0, 1, 2, 3, 5]),
    ({"gt": None, "lt": 2}, [0]),  # a null bound is no bound
])
def test_range_numbers(r: dict[str, Any], want: list[int]) -> None:
    assert rows({"must": [{"key": "n", "range": r}]}) == want


def test_range_floats_and_datetimes() -> None:
    assert rows({"must": [{"key": "price", "range": {"lt": 20}}]}) == [0]
    assert rows({"must": [{"key": "price", "range": {"lte": 20}}]}) == [0, 1]
    assert rows({"must": [{"key": "when", "range": {"gte": "2024-03-01"}}]}) == [1]
    assert rows({"must": [{"key": "when", "range": {"lt": "2024-03-01T00:00:00+00:00"}}]}) == [0]
    # 2024-01-01T00:00Z is 2023-12-31T23:00 at -01:00
    assert rows({"must": [{"key": "when", "range": {"lte": "2023-12-31T23:00:00-01:00"}}]}) == [0]


def test_values_count() -> None:
    assert rows({"must": [{"key": "tags", "values_count": {"gte": 2}}]}) == [0]
    assert rows({"must": [{"key": "tags", "values_count": {"gt": 0, "lt": 2}}]}) == [1, 5]
    # a path that reaches nothing counts as one 0
    assert rows({"must": [{"key": "tags", "values_count": {"lt": 1}}]}) == [2, 3, 4]


def test_several_conditions_on_one_field_all_apply() -> None:
    assert rows({"must": [{"key": "n", "match": {"value": 2}, "range": {"gte": 1}}]}) == [1]
    assert rows({"must": [{"key": "n", "match": {"value": 2}, "range": {"gt": 2}}]}) == []


# ---- is_empty / is_null / has_id / has_vector ------------------------------------------------


def test_is_empty_and_is_null() -> None:
    assert rows({"must": [{"is_empty": {"key": "tags"}}]}) == [2, 3, 4]  # [], missing
    assert rows({"must_not": [{"is_empty": {"key": "tags"}}]}) == [0, 1, 5]
    assert rows({"must": [{"is_empty": {"key": "city"}}]}) == [3, 4]  # null counts as empty
    assert rows({"must": [{"is_null": {"key": "city"}}]}) == [3]  # missing is not null
    assert rows({"must": [{"is_null": {"key": "ok"}}]}) == [2]
    assert rows({"must": [{"key": "city", "is_null": False}]}) == [0, 1, 2, 4, 5]


def test_has_id_and_has_vector() -> None:
    assert rows({"must": [{"has_id": [11, UUID.upper(), 999]}]}) == [1, 2]
    assert rows({"must_not": [{"has_id": [10, 13]}]}) == [1, 2, 4, 5]
    assert rows({"must": [{"has_id": []}]}) == []
    t = table(vectors={"img": [True, False, True, False, False, True]})
    assert rows({"must": [{"has_vector": "img"}]}, t) == [0, 2, 5]
    assert rows({"must": [{"has_vector": "text"}]}, t) == []


# ---- nested ----------------------------------------------------------------------------------


def test_nested_conditions_hold_for_one_element() -> None:
    same_element = {"must": [match("x", value=2), match("c", value="red")]}
    assert rows({"must": [{"nested": {"key": "items", "filter": same_element}}]}) == []
    assert rows({"must": [{"nested": {"key": "items[]", "filter": same_element}}]}) == []
    # the flat form matches row 0 (x=2 in one element, red in another)
    assert rows({"must": [match("items[].x", value=2), match("items[].c", value="red")]}) == [0]
    blue_one = {"must": [match("x", value=1), match("c", value="blue")]}
    assert rows({"must": [{"nested": {"key": "items", "filter": blue_one}}]}) == [1]
    assert rows({"must": [{"nested": {"key": "items", "filter": {}}}]}) == [0, 1]
    # has_id refers to points, so it never matches inside `nested`
    assert rows({"must": [{"nested": {"key": "items",
                                      "filter": {"must": [{"has_id": [10, 11]}]}}}]}) == []


# ---- boolean structure -------------------------------------------------------------------------


def test_must_should_must_not() -> None:
    berlin = match("city", value="Berlin")
    assert rows({"must": [berlin], "must_not": [match("ok", value=True)]}) == [2, 5]
    assert rows({"should": [match("city", value="London"), match("n", value=3)]}) == [1, 2]
    assert rows({"must": [berlin], "should": [match("n", value=3), match("tags", value="c")]}) \
        == [2, 5]
    assert rows({"must_not": [berlin, match("n", value=2)]}) == [3, 4]
    assert rows({"must": berlin}) == [0, 2, 5]  # a single condition in place of a list
    # sub-filters nest as conditions
    assert rows({"must": [{"should": [match("n", value=1), match("n", value=2)]},
                          {"must_not": [match("ok", value=False)]}]}) == [0]


def test_min_should() -> None:
    conds = [match("city", value="Berlin"), match("tags", value="b"), match("ok", value=True)]
    assert rows({"min_should": {"conditions": conds, "min_count": 2}}) == [0]
    assert rows({"min_should": {"conditions": conds, "min_count": 1}}) == [0, 1, 2, 5]
    assert rows({"min_should": {"conditions": conds, "min_count": 4}}) == []
    assert rows({"must": [match("n", value=2)],
                 "min_should": {"conditions": conds, "min_count": 1}}) == [1]


# ---- a compiled filter follows the table -------------------------------------------------------


def test_compiled_predicate_sees_payload_changes_and_new_rows() -> None:
    t = table()
    pred = parse_filter({"must": [match("city", value="Berlin")]})
    assert pred is not None
    assert np.flatnonzero(pred(t)).tolist() == [0, 2, 5]
    t.set_payload(1, {"city": "Berlin"})
    t.set_payload(0, {"city": "Rome"})
    assert np.flatnonzero(pred(t)).tolist() == [1, 2, 5]
    t.append({"city": ["Berlin"]}, 16)
    mask = pred(t)
    assert mask.shape == (7,)
    assert np.flatnonzero(mask).tolist() == [1, 2, 5, 6]


# ---- malformed filters ------------------------------------------------------------------------


@pytest.mark.parametrize("flt", [
    [],
    "city = Berlin",
    {"must": [], "filter": {}},  # unknown top-level key
    {"must": "city"},
    {"must": [["city"]]},
    {"must": [{"unknown": 1}]},
    {"must": [{"key": "city"}]},  # no condition on the key
    {"must": [{"key": 5, "match": {"value": 1}}]},
    {"must": [{"key": "a..b", "match": {"value": 1}}]},  # invalid path
    {"must": [{"key": "", "match": {"value": 1}}]},
    {"must": [match("n", value=1.5)]},  # floats cannot be matched
    {"must": [match("n", value=[1])]},
    {"must": [{"key": "n", "match": {}}]},
    {"must": [{"key": "n", "match": {"nope": 1}}]},
    {"must": [match("n", any=[1.5])]},
    {"must": [match("n", any="a")]},
    {"must": [match("n", **{"except": [True]})]},
    {"must": [match("desc", text=5)]},
    {"must": [{"key": "n", "range": {"gt": True}}]},
    {"must": [{"key": "n", "range": {"gt": float("nan")}}]},
    {"must": [{"key": "n", "range": {"above": 1}}]},
    {"must": [{"key": "n", "range": {"gt": "not a date"}}]},
    {"must": [{"key": "n", "range": {"gt": [1]}}]},
    {"must": [{"key": "n", "range": 5}]},
    {"must": [{"key": "n", "values_count": {"gt": "2024-01-01"}}]},
    {"must": [{"key": "loc", "geo_radius": {"center": {"lat": 91, "lon": 0}, "radius": 1}}]},
    {"must": [{"is_empty": {}}]},
    {"must": [{"is_null": "city"}]},
    {"must": [{"has_id": 10}]},
    {"must": [{"has_id": [-1]}]},
    {"must": [{"has_id": ["not-a-uuid"]}]},
    {"must": [{"has_id": [True]}]},
    {"must": [{"has_vector": 1}]},
    {"must": [{"nested": {"filter": {}}}]},
    {"must": [{"nested": {"key": "items", "filter": {"must": [{"bad": 1}]}}}]},
    {"min_should": {"conditions": [], "min_count": 0}},
    {"min_should": {"conditions": []}},
    {"min_should": [match("n", value=1)]},
])
def test_malformed_filter_is_bad_request(flt: Any) -> None:
    with pytest.raises(BadRequest):
        parse_filter(flt)


def test_malformed_filter_fails_before_touching_data() -> None:
    """Validation is up front: an error in the last condition raises at parse time, even
    though earlier conditions are fine (the predicate is never built)."""
    with pytest.raises(BadRequest, match="min_count"):
        parse_filter({"must": [match("city", value="Berlin")],
                      "min_should": {"conditions": [match("n", value=1)], "min_count": 0}})
