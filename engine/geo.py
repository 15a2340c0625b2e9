"""Geo filter conditions (`geo_radius`, `geo_bounding_box`, `geo_polygon`) as Qdrant has them.

Each condition is validated once (400 with Qdrant's messages) and compiled to a function of
two float arrays (latitudes, longitudes of a column's geo points) returning a bool array, so a
filter tests every geo point of a segment in a few numpy operations. Boundaries follow Qdrant:
radius is strict (`distance < radius`), boxes exclude their edges (and wrap across the
antimeridian when `top_left.lon > bottom_right.lon`), polygons exclude the exterior's boundary
and everything inside or on an interior ring.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import BadRequest

# Mean Earth radius (IUGG), as Qdrant's haversine (same constant as formula.EARTH_RADIUS_M;
# not imported: formula imports filters, which imports this module).
EARTH_RADIUS_M = 6371008.8

GeoTest = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (lat, lon) → matches
GEO_CONDITIONS = ("geo_bounding_box", "geo_radius", "geo_polygon")


def _fmt(x: float) -> str:
    """A float as Rust's `Display` writes it (100.0 → "100", never an exponent)."""
    return np.format_float_positional(x, trim="-")


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRequest(f"`{what}` must be a number")
    try:
        return float(v)
    except OverflowError:
        raise BadRequest(f"`{what}` is out of range") from None


def parse_point(obj: Any, what: str) -> tuple[float, float]:
    """A GeoPoint → (lat, lon), checked as Qdrant checks one."""
    if not isinstance(obj, dict) or "lon" not in obj or "lat" not in obj:
        raise BadRequest(f"`{what}` must be a geo point with `lon` and `lat`")
    lon = _number(obj["lon"], f"{what}.lon")
    lat = _number(obj["lat"], f"{what}.lat")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise BadRequest(f"Wrong format of GeoPoint payload: expected `lat` = {_fmt(lat)} "
                         f"within [-90;90] and `lon` = {_fmt(lon)} within [-180;180]")
    return lat, lon


def parse_geo(kind: str, obj: Any) -> GeoTest:
    if not isinstance(obj, dict):
        raise BadRequest(f"`{kind}` must be an object")
    if kind == "geo_radius":
        return _radius(obj)
    if kind == "geo_bounding_box":
        return _bounding_box(obj)
    return _polygon(obj)


# ---- radius --------------------------------------------------------------------------------


def haversine(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """Great-circle distances in metres from many points to one (Qdrant's formula)."""
    la, lo = np.radians(lat), np.radians(lon)
    p0, l0 = math.radians(lat0), math.radians(lon0)
    a = np.sin((p0 - la) / 2) ** 2 + np.cos(la) * math.cos(p0) * np.sin((l0 - lo) / 2) ** 2
    return EARTH_RADIUS_M * 2 * np.arcsin(np.sqrt(a))


def _radius(obj: dict[str, Any]) -> GeoTest:
    if "center" not in obj or "radius" not in obj:
        raise BadRequest("`geo_radius` needs `center` and `radius`")
    lat0, lon0 = parse_point(obj["center"], "geo_radius.center")
    radius = _number(obj["radius"], "geo_radius.radius")
    return lambda lat, lon: haversine(lat, lon, lat0, lon0) < radius


# ---- bounding box --------------------------------------------------------------------------


def _bounding_box(obj: dict[str, Any]) -> GeoTest:
    if "top_left" not in obj or "bottom_right" not in obj:
        raise BadRequest("`geo_bounding_box` needs `top_left` and `bottom_right`")
    top, left = parse_point(obj["top_left"], "geo_bounding_box.top_left")
    bottom, right = parse_point(obj["bottom_right"], "geo_bounding_box.bottom_right")

    def test(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        if left > right:  # the box crosses the antimeridian
            in_lon = (lon > left) | (lon < right)
        else:
            in_lon = (left < lon) & (lon < right)
        return in_lon & (bottom < lat) & (lat < top)

    return test


# ---- polygon -------------------------------------------------------------------------------


def _ring(obj: Any, what: str) -> np.ndarray:
    """A GeoLineString → (k, 2) array of (lon, lat), validated as Qdrant validates a ring."""
    if not isinstance(obj, dict) or not isinstance(obj.get("points"), list):
        raise BadRequest(f"`{what}` must be a line string with `points`")
    pts = [parse_point(p, f"{what}.points[{i}]") for i, p in enumerate(obj["points"])]
    if len(pts) <= 3:
        raise BadRequest(f"polygon invalid, the size must be at least 4, got {len(pts)}")
    (lat_a, lon_a), (lat_b, lon_b) = pts[0], pts[-1]
    if abs(lat_a - lat_b) > sys.float_info.epsilon or abs(lon_a - lon_b) > sys.float_info.epsilon:
        raise BadRequest("polygon invalid, the first and the last points should be the same "
                         "to form a closed line")
    ring = np.array([(lon, lat) for lat, lon in pts], dtype=np.float64)
    if ring[0, 0] == ring[-1, 0] and ring[0, 1] == ring[-1, 1]:
        ring = ring[:-1]  # the closing point adds only a zero-length edge
    return ring


def _in_ring(x: np.ndarray, y: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(strictly inside, on the boundary) per point, by ray casting as Qdrant's local mode.

    Points are sorted by latitude once; each edge then only touches the points whose latitude
    lies within the edge's span (the only ones it can cross or contain), found by binary search.
    """
    inside = np.zeros(len(x), dtype=bool)
    on = np.zeros(len(x), dtype=bool)
    order = np.argsort(y, kind="stable")
    ys = y[order]
    xj, yj = ring[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        for xi, yi in ring:
            lo = np.searchsorted(ys, min(yi, yj), side="left")
            hi = np.searchsorted(ys, max(yi, yj), side="right")
            if hi > lo:
                idx = order[lo:hi]
                px, py = x[idx], y[idx]
                on[idx] |= ((py * (xi - xj) + yi * (xj - px) + yj * (px - xi) == 0)
                            & ((xi - px) * (xj - px) <= 0))
                inside[idx] ^= (((yi > py) != (yj > py))
                                & (px < (xj - xi) * (py - yi) / (yj - yi) + xi))
            xj, yj = xi, yi
    return inside & ~on, on


def _polygon(obj: dict[str, Any]) -> GeoTest:
    if "exterior" not in obj:
        raise BadRequest("`geo_polygon` needs `exterior`")
    exterior = _ring(obj["exterior"], "geo_polygon.exterior")
    raw_interiors = obj.get("interiors")
    if raw_interiors is not None and not isinstance(raw_interiors, list):
        raise BadRequest("`geo_polygon.interiors` must be a list of line strings")
    interiors = [_ring(r, f"geo_polygon.interiors[{i}]")
                 for i, r in enumerate(raw_interiors or [])]
    (x_lo, y_lo), (x_hi, y_hi) = exterior.min(axis=0), exterior.max(axis=0)

    def test(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        out = np.zeros(len(lat), dtype=bool)
        # only points in the exterior's bounding box can be inside it
        cand = np.flatnonzero((lon >= x_lo) & (lon <= x_hi) & (lat >= y_lo) & (lat <= y_hi))
        if not len(cand):
            return out
        x, y = lon[cand], lat[cand]
        hit, _ = _in_ring(x, y, exterior)
        for ring in interiors:
            inside, on = _in_ring(x, y, ring)
            hit &= ~(inside | on)  # a point on a hole's edge is outside the polygon
        out[cand] = hit
        return out

    return test
