"""Score boosting formulas (`{"formula": ..., "defaults": ...}`): parsed once, evaluated as
numpy operations over all candidates at once.

Every operator follows Qdrant's semantics: `mult` stops at a zero factor and `div` at a zero
numerator (what follows is not evaluated, so it cannot fail), a zero divisor gives
`by_zero_default` or an error, and any operation producing a non-finite number is a 400. An
error is raised only for candidates whose evaluation actually reaches the failing operation,
which the evaluators track with an `active` mask.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.columns import parse_datetime
from engine.errors import BadInput, BadRequest
from engine.filters import Predicate, parse_filter
from engine.payload import parse_path

EARTH_RADIUS_M = 6371008.8  # mean Earth radius (IUGG), as Qdrant's geo distance
_SCORE_RE = re.compile(r"^\$score(?:\[([0-9]+)\])?$")


class Inputs(Protocol):
    """What a formula reads for its `n` candidates."""

    n: int

    def scores(self, i: int) -> np.ndarray:
        """Scores of the candidates in prefetch `i`, NaN where a candidate is not in it."""
        ...

    def values(self, key: str) -> list[list[Any]]:
        """Each candidate's payload values at `key` (arrays unwrapped one level)."""
        ...

    def condition(self, pred: Predicate) -> np.ndarray:
        """Whether each candidate passes a filter condition."""
        ...


Eval = Callable[[Inputs, np.ndarray], np.ndarray]  # (inputs, active mask) → float64 values


@dataclass(frozen=True)
class Formula:
    expr: Eval
    defaults: dict[str, Any]

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        """float32 scores of the candidates (a non-finite one is an error)."""
        active = np.ones(inputs.n, bool)
        with np.errstate(all="ignore"):
            out = self.expr(inputs, active)
            f32 = out.astype(np.float32)
        bad = ~np.isfinite(f32)
        if bad.any():
            v = float(out[np.flatnonzero(bad)[0]])
            _non_finite(f"{v} as f32 = {float(f32[np.flatnonzero(bad)[0]])}")
        return f32


def _non_finite(expr: str) -> None:
    raise BadInput(f"The expression {expr} produced a non-finite number")


def _fail_where(bad: np.ndarray, describe: Callable[[int], str]) -> None:
    if bad.any():
        _non_finite(describe(int(np.flatnonzero(bad)[0])))


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRequest(f"formula: `{what}` must be a number")
    return float(v)


def parse_formula(raw: Any, defaults: Any) -> Formula:
    """A FormulaQuery's `formula` and `defaults` (a malformed expression is a 400)."""
    if defaults is None:
        defaults = {}
    if not isinstance(defaults, dict):
        raise BadRequest("formula `defaults` must be an object")
    parsed: dict[str, Any] = {}
    for key, value in defaults.items():  # `$score` and `$score[0]` share a default
        idx = _score_index(key)
        parsed[f"$score[{idx}]" if idx is not None else key] = value
    return Formula(_parse(raw, parsed), parsed)


def _score_index(var: str) -> int | None:
    if not var.startswith("$score"):
        return None
    m = _SCORE_RE.match(var)
    if m is None:
        raise BadRequest(f"Invalid score pattern: {var}")
    return int(m.group(1) or 0)


_UNARY = ("neg", "abs", "sqrt", "exp", "log10", "ln")
_DECAYS = ("lin_decay", "exp_decay", "gauss_decay")


def _parse(e: Any, defaults: dict[str, Any]) -> Eval:
    if isinstance(e, bool) or e is None or isinstance(e, list):
        raise BadRequest(f"formula: invalid expression {e!r}")
    if isinstance(e, int | float):
        c = float(e)
        return lambda inp, active: np.full(inp.n, c)
    if isinstance(e, str):
        return _variable(e, defaults)
    if not isinstance(e, dict):
        raise BadRequest(f"formula: invalid expression {e!r}")
    if len(e) == 1:
        (op, arg), = e.items()
        if op in ("mult", "sum"):
            if not isinstance(arg, list):
                raise BadRequest(f"formula: `{op}` takes a list of expressions")
            parts = [_parse(x, defaults) for x in arg]
            return _mult(parts) if op == "mult" else _sum(parts)
        if op in _UNARY:
            return _unary(op, _parse(arg, defaults))
        if op == "div":
            return _div(arg, defaults)
        if op == "pow":
            return _pow(arg, defaults)
        if op in _DECAYS:
            return _decay(op, arg, defaults)
        if op == "datetime":
            return _datetime(arg)
        if op == "datetime_key":
            return _datetime_key(arg, defaults)
        if op == "geo_distance":
            return _geo_distance(arg, defaults)
    return _condition(e)


# ---- leaves -----------------------------------------------------------------------------------


def _variable(var: str, defaults: dict[str, Any]) -> Eval:
    idx = _score_index(var)
    if idx is not None:
        default = defaults.get(f"$score[{idx}]")
        fill = 0.0 if default is None else _number(default, f"defaults.{var}")

        def score(inp: Inputs, active: np.ndarray) -> np.ndarray:
            s = inp.scores(idx)
            return np.where(np.isnan(s), fill, s)
        return score
    parse_path(var)

    def payload(inp: Inputs, active: np.ndarray) -> np.ndarray:
        out = np.zeros(inp.n)
        for i, vals in enumerate(_resolved(inp, var, defaults)):
            if not active[i]:
                continue
            v = _single(vals, var)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise BadInput(f"Expected number value for {var} in the payload and/or in the "
                               "formula defaults. Error: Value is not a number")
            out[i] = v
        return out
    return payload


def _resolved(inp: Inputs, key: str, defaults: dict[str, Any]) -> list[list[Any]]:
    """Each candidate's values at `key`, the default's where the payload has none."""
    default = defaults.get(key)
    dvals = [] if default is None else (default if isinstance(default, list) else [default])
    return [vals if vals else dvals for vals in inp.values(key)]


def _single(vals: list[Any], key: str) -> Any:
    if not vals:
        raise BadInput(f"No value found for {key} in the payload nor the formula defaults")
    return vals[0] if len(vals) == 1 else vals


def _condition(raw: dict[str, Any]) -> Eval:
    pred = parse_filter({"must": [raw]})
    assert pred is not None

    def cond(inp: Inputs, active: np.ndarray) -> np.ndarray:
        return inp.condition(pred).astype(np.float64)
    return cond


def _datetime(raw: Any) -> Eval:
    ts = parse_datetime(raw) if isinstance(raw, str) else float("nan")
    if math.isnan(ts):
        raise BadRequest(f"Expected datetime in supported format for {raw}")
    return lambda inp, active: np.full(inp.n, ts)


def _datetime_key(key: Any, defaults: dict[str, Any]) -> Eval:
    if not isinstance(key, str):
        raise BadRequest("formula: `datetime_key` must be a payload key")
    parse_path(key)

    def run(inp: Inputs, active: np.ndarray) -> np.ndarray:
        out = np.zeros(inp.n)
        for i, vals in enumerate(_resolved(inp, key, defaults)):
            if active[i]:
                v = _single(vals, key)
                ts = parse_datetime(v) if isinstance(v, str) else float("nan")
                if math.isnan(ts):
                    raise BadInput(f"Expected datetime for {key} in the payload and/or in the "
                                   "formula defaults.")
                out[i] = ts
        return out
    return run


def _geo_distance(arg: Any, defaults: dict[str, Any]) -> Eval:
    if not isinstance(arg, dict) or not isinstance(arg.get("to"), str) \
            or not isinstance(arg.get("origin"), dict):
        raise BadRequest("formula: `geo_distance` needs `origin` and `to`")
    origin, key = arg["origin"], arg["to"]
    lon0 = _number(origin.get("lon"), "geo_distance.origin.lon")
    lat0 = _number(origin.get("lat"), "geo_distance.origin.lat")
    parse_path(key)

    def run(inp: Inputs, active: np.ndarray) -> np.ndarray:
        lon = np.full(inp.n, lon0)
        lat = np.full(inp.n, lat0)
        for i, vals in enumerate(_resolved(inp, key, defaults)):
            if active[i]:
                v = _single(vals, key)
                if not isinstance(v, dict) or not all(
                        isinstance(v.get(c), int | float) and not isinstance(v.get(c), bool)
                        for c in ("lon", "lat")):
                    raise BadInput(f"Expected geo point for {key} in the payload and/or in the "
                                   "formula defaults.")
                lon[i], lat[i] = v["lon"], v["lat"]
        return haversine(lon0, lat0, lon, lat)
    return run


def haversine(lon0: float, lat0: float, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Great-circle distances in meters from one point to many."""
    l0, p0 = math.radians(lon0), math.radians(lat0)
    lr, pr = np.radians(lon), np.radians(lat)
    a = np.sin((pr - p0) / 2) ** 2 + math.cos(p0) * np.cos(pr) * np.sin((lr - l0) / 2) ** 2
    return EARTH_RADIUS_M * 2 * np.arcsin(np.sqrt(a))


# ---- operators --------------------------------------------------------------------------------


def _mult(parts: list[Eval]) -> Eval:
    def run(inp: Inputs, active: np.ndarray) -> np.ndarray:
        out = np.ones(inp.n)
        done = np.zeros(inp.n, bool)  # a zero factor was met: the product is that zero
        for p in parts:
            f = p(inp, active & ~done)
            zero = (f == 0) & ~done
            out = np.where(done, out, np.where(zero, f, out * f))
            done |= zero
        return out
    return run


def _sum(parts: list[Eval]) -> Eval:
    def run(inp: Inputs, active: np.ndarray) -> np.ndarray:
        out = np.zeros(inp.n)
        for p in parts:
            out = out + p(inp, active)
        return out
    return run


def _unary(op: str, inner: Eval) -> Eval:
    def run(inp: Inputs, active: np.ndarray) -> np.ndarray:
        v = inner(inp, active)
        if op == "neg":
            return -v
        if op == "abs":
            return np.abs(v)
        if op == "sqrt":
            _fail_where(active & ~(v >= 0), lambda i: f"√{v[i]}")
            return np.sqrt(np.maximum(v, 0))
        if op == "exp":
            out = np.exp(v)
            _fail_where(active & ~np.isfinite(out) & ~np.isnan(v), lambda i: f"exp({v[i]})")
            return out
        fn = np.log10 if op == "log10" else np.log
        _fail_where(active & ~(v > 0), lambda i: f"{op}({v[i]})")
        out = fn(np.where(v > 0, v, 1.0))
        _fail_where(active & ~np.isfinite(out), lambda i: f"{op}({v[i]})")
        return out
    return run


def _div(arg: Any, defaults: dict[str, Any]) -> Eval:
    if not isinstance(arg, dict) or "left" not in arg or "right" not in arg:
        raise BadRequest("formula: `div` needs `left` and `right`")
    left, right = _parse(arg["left"], defaults), _parse(arg["right"], defaults)
    raw_default = arg.get("by_zero_default")
    by_zero = None if raw_default is None else _number(raw_default, "div.by_zero_default")

    def run(inp: Inputs, active: np.ndarray) -> np.ndarray:
        a = left(inp, active)
        lz = a == 0
        b = right(inp, active & ~lz)
        rz = (b == 0) & ~lz
        if by_zero is None:
            _fail_where(active & rz, lambda i: f"{a[i]}/{b[i]}")
        q = a / np.where(b == 0, 1.0, b)
        _fail_where(active & ~lz & ~rz & ~np.isfinite(q), lambda i: f"{a[i]}/{b[i]}")
        return np.where(lz, a, np.where(rz, 0.0 if by_zero is None else by_zero, q))
    return run


def _pow(arg: Any, defaults: dict[str, Any]) -> Eval:
    if not isinstance(arg, dict) or "base" not in arg or "exponent" not in arg:
        raise BadRequest("formula: `pow` needs `base` and `exponent`")
    base, exponent = _parse(arg["base"], defaults), _parse(arg["exponent"], defaults)

    def run(inp: Inputs, active: np.ndarray) -> np.ndarray:
        b, e = base(inp, active), exponent(inp, active)
        out = np.power(b, e)
        _fail_where(active & ~np.isfinite(out), lambda i: f"{b[i]}^{e[i]}")
        return out
    return run


def _decay(op: str, arg: Any, defaults: dict[str, Any]) -> Eval:
    if not isinstance(arg, dict) or "x" not in arg:
        raise BadRequest(f"formula: `{op}` needs `x`")
    x = _parse(arg["x"], defaults)
    target = _parse(arg["target"], defaults) if arg.get("target") is not None else None
    midpoint = 0.5 if arg.get("midpoint") is None else _number(arg["midpoint"], f"{op}.midpoint")
    scale = 1.0 if arg.get("scale") is None else _number(arg["scale"], f"{op}.scale")
    if op == "lin_decay":
        if not 0.0 <= midpoint <= 1.0:
            raise BadRequest(
                f"Linear decay midpoint should be in the range [0.0, 1.0], got {midpoint}")
    elif not 0.0 < midpoint < 1.0:
        raise BadRequest(f"Decay midpoint should be in the range (0.0, 1.0), got {midpoint}")
    if scale <= 0.0:
        raise BadRequest(f"Scale must be non-zero positive, got {scale}")

    def run(inp: Inputs, active: np.ndarray) -> np.ndarray:
        xv = x(inp, active)
        tv = target(inp, active) if target is not None else 0.0
        diff = xv - tv
        if op == "lin_decay":
            return np.maximum(0.0, -((1.0 - midpoint) / scale) * np.abs(diff) + 1.0)
        if op == "exp_decay":
            return np.exp(math.log(midpoint) / scale * np.abs(diff))
        return np.exp(math.log(midpoint) / (scale * scale) * diff * diff)
    return run
