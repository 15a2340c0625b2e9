"""engine/geo.py and the geo conditions of engine/filters.py, in process, against qdrant-client's
local mode (`check_filter` over the same payload dicts) on random points and random shapes:
radius, bounding boxes (also across the antimeridian), polygons with holes, points exactly on
edges and vertices, arrays of points, malformed points; plus geo values under values_count,
is_empty and is_null; and validation with Qdrant's messages."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from qdrant_client import models
from qdrant_client.local.payload_filters import check_filter

from engine.columns import Column, ColumnData
from engine.errors import BadRequest
from engine.filters import parse_filter


class Table:
    """Payload dicts as a FilterTable (only what field conditions read)."""

    payload_version = 0

    def __init__(self, payloads: list[dict[str, Any]]) -> None:
        self.payloads = payloads
        self.n = len(payloads)
        self._cols: dict[str, Column] = {}

    def payload_rows(self) -> int:
        return self.n

    def payload_at(self, row: int) -> dict[str, Any]:
        return self.payloads[row]

    def payload_changes_since(self, version: int) -> np.ndarray:
        return np.empty(0, np.int64)

    def column(self, path: str) -> ColumnData:
        return self._cols.setdefault(path, Column(path)).sync(self)

    def index_type(self, path: str) -> str | None:
        return None


def _point(rng: random.Random, grid: bool) -> dict[str, Any]:
    if grid:  # coarse grid: many points exactly on box edges and polygon edges/vertices
        return {"lon": float(rng.randrange(-6, 7) * 30), "lat": float(rng.randrange(-3, 4) * 30)}
    return {"lon": rng.uniform(-180, 180), "lat": rng.uniform(-90, 90)}


def _value(rng: random.Random) -> Any:
    grid = rng.random() < 0.4
    r = rng.random()
    if r < 0.55:
        return _point(rng, grid)
    if r < 0.75:
        return [_point(rng, grid) for _ in range(rng.randint(0, 3))]
    return rng.choice([None, [], 5, "x", {"lon": 1}, {"lon": True, "lat": 1},
                       {"lon": 10, "lat": 10, "extra": 1}, {"lat": "1", "lon": 2},
                       [None, {"lon": 0, "lat": 0}], [[{"lon": 1, "lat": 1}]],
                       {"lon": 200, "lat": 95}])


def _payloads(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        p: dict[str, Any] = {}
        if rng.random() < 0.9:
            p["loc"] = _value(rng)
        if rng.random() < 0.3:
            p["places"] = [{"at": _value(rng)} for _ in range(rng.randint(0, 2))]
        out.append(p)
    return out


def _box(rng: random.Random) -> dict[str, Any]:
    lons = sorted(rng.choice([rng.uniform(-180, 180), rng.randrange(-6, 7) * 30.0])
                  for _ in range(2))
    lats = sorted(rng.choice([rng.uniform(-90, 90), rng.randrange(-3, 4) * 30.0])
                  for _ in range(2))
    left, right = (lons[1], lons[0]) if rng.random() < 0.3 else (lons[0], lons[1])  # antimeridian
    return {"top_left": {"lon": left, "lat": lats[1]},
            "bottom_right": {"lon": right, "lat": lats[0]}}


def _ring(rng: random.Random, cx: float, cy: float, r: float, grid: bool) -> dict[str, Any]:
    k = rng.randint(3, 7)
    if grid:  # axis-aligned square on the grid: edges pass through grid points
        h = 30.0 * rng.randint(1, 2)
        pts = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    else:
        angles = sorted(rng.uniform(0, 2 * np.pi) for _ in range(k))
        pts = [(cx + r * rng.uniform(0.3, 1) * np.cos(a), cy + r * rng.uniform(0.3, 1) * np.sin(a))
               for a in angles]
    pts = [(max(-180.0, min(180.0, x)), max(-90.0, min(90.0, y))) for x, y in pts]
    pts.append(pts[0])
    return {"points": [{"lon": x, "lat": y} for x, y in pts]}


def _polygon(rng: random.Random) -> dict[str, Any]:
    grid = rng.random() < 0.4
    cx, cy = (30.0 * rng.randrange(-4, 5), 30.0 * rng.randrange(-1, 2)) if grid else \
        (rng.uniform(-150, 150), rng.uniform(-60, 60))
    poly: dict[str, Any] = {"exterior": _ring(rng, cx, cy, rng.uniform(20, 90), grid)}
    if rng.random() < 0.6:
        poly["interiors"] = [_ring(rng, cx, cy, rng.uniform(5, 30), grid and rng.random() < 0.5)
                             for _ in range(rng.randint(1, 2))]
    return poly


def _condition(rng: random.Random) -> dict[str, Any]:
    key = rng.choice(["loc", "loc", "places[].at"])
    kind = rng.choice(["geo_radius", "geo_bounding_box", "geo_polygon"])
    if kind == "geo_radius":
        center = _point(rng, rng.random() < 0.5)
        return {"key": key, kind: {"center": center,
                                   "radius": rng.choice([0, 1e5, 1e6, 5e6, 2e7])}}
    if kind == "geo_bounding_box":
        return {"key": key, kind: _box(rng)}
    return {"key": key, kind: _polygon(rng)}


def _oracle(flt: dict[str, Any], payloads: list[dict[str, Any]]) -> list[int]:
    f = models.Filter.model_validate(flt)
    return [i for i, p in enumerate(payloads) if check_filter(f, p, i, {})]


def _ours(flt: dict[str, Any], table: Table) -> list[int]:
    pred = parse_filter(flt)
    assert pred is not None
    return np.flatnonzero(pred(table)).tolist()


@pytest.mark.parametrize("seed", range(6))
def test_geo_conditions_match_local_mode(seed: int) -> None:
    rng = random.Random(seed)
    payloads = _payloads(rng, 300)
    table = Table(payloads)
    for _ in range(40):
        cond = _condition(rng)
        flt = rng.choice([{"must": [cond]}, {"must_not": [cond]},
                          {"should": [cond, _condition(rng)]}])
        assert _ours(flt, table) == _oracle(flt, payloads), flt


@pytest.mark.parametrize("seed", range(3))
def test_geo_values_under_count_empty_null(seed: int) -> None:
    rng = random.Random(100 + seed)
    payloads = _payloads(rng, 300)
    table = Table(payloads)
    conds: list[dict[str, Any]] = [{"is_empty": {"key": "loc"}}, {"is_null": {"key": "loc"}},
                                   {"is_empty": {"key": "places[].at"}},
                                   {"is_null": {"key": "places[].at"}}]
    for op in ("lt", "lte", "gt", "gte"):
        for b in range(4):
            conds.append({"key": rng.choice(["loc", "places[].at"]), "values_count": {op: b}})
    for cond in conds:
        for flt in ({"must": [cond]}, {"must_not": [cond]}):
            assert _ours(flt, table) == _oracle(flt, payloads), flt


def test_antimeridian_box_and_radius_across_it() -> None:
    payloads = [{"loc": {"lon": lon, "lat": 0.0}} for lon in (179.5, -179.5, 0.0, 170.0, -170.0)]
    table = Table(payloads)
    for cond in ({"geo_bounding_box": {"top_left": {"lon": 175, "lat": 10},
                                       "bottom_right": {"lon": -175, "lat": -10}}},
                 {"geo_radius": {"center": {"lon": 180, "lat": 0}, "radius": 200_000}}):
        flt = {"must": [{"key": "loc", **cond}]}
        assert _ours(flt, table) == _oracle(flt, payloads) == [0, 1]


def _square(lo: float, hi: float) -> dict[str, Any]:
    pts = [(lo, lo), (hi, lo), (hi, hi), (lo, hi), (lo, lo)]
    return {"points": [{"lon": x, "lat": y} for x, y in pts]}


@pytest.mark.parametrize("cond, message", [
    ({"geo_radius": {"center": {"lon": 0, "lat": 100}, "radius": 1}},
     "Wrong format of GeoPoint payload: expected `lat` = 100 within [-90;90] and `lon` = 0 "
     "within [-180;180]"),
    ({"geo_bounding_box": {"top_left": {"lon": -180.5, "lat": 1},
                           "bottom_right": {"lon": 1, "lat": 0}}},
     "expected `lat` = 1 within [-90;90] and `lon` = -180.5 within [-180;180]"),
    ({"geo_polygon": {"exterior": {"points": _square(0, 1)["points"][:3]}}},
     "polygon invalid, the size must be at least 4, got 3"),
    ({"geo_polygon": {"exterior": {"points": _square(0, 1)["points"][:4]}}},
     "polygon invalid, the first and the last points should be the same to form a closed line"),
    ({"geo_polygon": {"exterior": _square(0, 10),
                      "interiors": [{"points": _square(2, 3)["points"][:2]}]}},
     "polygon invalid, the size must be at least 4, got 2"),
    ({"geo_radius": {"center": {"lon": 0}, "radius": 1}}, "`lon` and `lat`"),
    ({"geo_radius": {"center": {"lon": 0, "lat": "1"}, "radius": 1}}, "must be a number"),
    ({"geo_radius": {"center": {"lon": 0, "lat": 0}}}, "needs `center` and `radius`"),
    ({"geo_bounding_box": {"top_left": {"lon": 0, "lat": 0}}}, "`bottom_right`"),
    ({"geo_polygon": {"interiors": []}}, "needs `exterior`"),
    ({"geo_polygon": {"exterior": _square(0, 1), "interiors": {"points": []}}}, "interiors"),
    ({"geo_radius": [1]}, "must be an object"),
])
def test_malformed_geo_is_bad_request(cond: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_filter({"must": [{"key": "loc", **cond}]})
    assert message in str(err.value)


def test_closing_point_within_epsilon_is_accepted() -> None:
    ring = _square(0, 10)
    ring["points"][-1] = {"lon": 1e-17, "lat": 0}
    assert parse_filter({"must": [{"key": "loc", "geo_polygon": {"exterior": ring}}]})


@pytest.mark.parametrize("bound", [{"gt": 1.5}, {"gte": -1}, {"lt": "2024-01-01T00:00:00Z"}])
def test_values_count_bounds_are_unsigned_integers(bound: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="non-negative integers"):
        parse_filter({"must": [{"key": "n", "values_count": bound}]})


@pytest.mark.parametrize("bound, message", [
    ({"gt": "abc"}, "must be a number, or an RFC 3339 datetime"),
    ({"gt": 1, "lt": "2024-01-01T00:00:00Z"}, "all numbers or all datetimes"),
])
def test_range_string_bounds(bound: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_filter({"must": [{"key": "n", "range": bound}]})
