"""Query plan pieces in isolation: fusion (RRF, weighted RRF, DBSF, ties) and formulas."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import fusion
from engine.errors import BadInput, BadRequest
from engine.filters import Predicate
from engine.formula import parse_formula


def _r(ids: list[Any], scores: list[float]) -> fusion.Ranked:
    return ids, np.array(scores, np.float64)


def test_rrf_default_k_and_order() -> None:
    ids, scores = fusion.rrf([_r([1, 2, 3], [.9, .8, .7]), _r([3, 4], [5., 4.])], limit=10)
    # k = 2: rank r (from 0) contributes 1 / (r + 2)
    want = {1: 1 / 2, 2: 1 / 3, 3: 1 / 4 + 1 / 2, 4: 1 / 3}
    assert ids == [3, 1, 2, 4]  # 2 and 4 tie: first appearance first
    assert np.allclose(scores, [want[i] for i in ids])


def test_rrf_k_weights_and_limit() -> None:
    ids, scores = fusion.rrf([_r(["a", "b"], [1, 0]), _r(["b", "a"], [1, 0])], limit=1, k=60,
                             weights=[2.0, 0.5])
    # 1 / ((r + 1) / w + k - 1)
    b = 1 / (2 / 2 + 59) + 1 / (1 / .5 + 59)  # beats a: 1 / (1/2 + 59) + 1 / (2/.5 + 59)
    assert ids == ["b"] and np.isclose(scores[0], b)
    ids, scores = fusion.rrf([_r([1], [1]), _r([2], [1])], limit=5, weights=[0.0, 1.0])
    assert ids == [2, 1] and scores.tolist() == [0.5, 0.0]  # weight 0 contributes nothing
    with pytest.raises(BadRequest):
        fusion.rrf([_r([1], [1])], limit=5, weights=[1.0, 2.0])


def test_dbsf() -> None:
    ids, scores = fusion.dbsf([_r([1, 2, 3], [3., 2., 1.]), _r([4], [7.]), _r([], [])], limit=10)
    std = 1.0  # sample standard deviation of 3, 2, 1
    norm = {1: (3 - (2 - 3 * std)) / (6 * std), 2: .5, 3: (1 - (2 - 3 * std)) / (6 * std)}
    assert ids == [1, 2, 4, 3]  # 2 (0.5) before 4 (0.5, single point): first appearance
    assert np.allclose(scores, [norm[1], .5, .5, norm[3]])
    ids, scores = fusion.dbsf([_r([1, 2], [4., 4.])], limit=10)
    assert scores.tolist() == [.5, .5]  # zero variance


class FakeInputs:
    def __init__(self, scores: list[list[float]], payloads: list[dict[str, Any]]) -> None:
        self.n = len(payloads)
        self._scores = [np.array(s, np.float64) for s in scores]
        self.payloads = payloads

    def scores(self, i: int) -> np.ndarray:
        return self._scores[i] if i < len(self._scores) else np.full(self.n, np.nan)

    def values(self, key: str) -> list[list[Any]]:
        return [[p[key]] if p.get(key) is not None else [] for p in self.payloads]

    def condition(self, pred: Predicate) -> np.ndarray:
        return np.array([p.get("tag") == "x" for p in self.payloads])


INPUTS = FakeInputs([[1.0, 2.0, np.nan], [np.nan, 0.5, 4.0]],
                    [{"v": 2, "tag": "x", "dt": "2024-01-02T00:00:00Z",
                      "loc": {"lon": 0.0, "lat": 0.0}},
                     {"v": -3.5, "tag": "y", "dt": "2024-01-01T00:00:00Z",
                      "loc": {"lon": 1.0, "lat": 0.0}},
                     {"tag": "x", "dt": "2024-01-03T00:00:00Z", "loc": {"lon": 0.0, "lat": 1.0}}])


@pytest.mark.parametrize(("expr", "defaults", "want"), [
    ("$score", {}, [1.0, 2.0, 0.0]),
    ("$score[1]", {"$score[1]": 9}, [9.0, 0.5, 4.0]),
    (3, {}, [3, 3, 3]),
    ({"sum": ["$score", "$score[1]", 1]}, {}, [2.0, 3.5, 5.0]),
    ({"mult": ["v", 2]}, {"v": 10}, [4.0, -7.0, 20.0]),
    ({"mult": [0, "missing"]}, {}, [0, 0, 0]),  # a zero factor stops the product
    ({"neg": "v"}, {"v": 1}, [-2, 3.5, -1]),
    ({"abs": "v"}, {"v": 1}, [2, 3.5, 1]),
    ({"div": {"left": "$score", "right": "$score[1]", "by_zero_default": 7}}, {},
     [7.0, 4.0, 0.0]),
    ({"pow": {"base": "v", "exponent": 2}}, {"v": 0}, [4, 12.25, 0]),
    ({"sqrt": {"abs": "v"}}, {"v": 4}, [np.sqrt(2), np.sqrt(3.5), 2]),
    ({"log10": {"abs": "v"}}, {"v": 100}, [np.log10(2), np.log10(3.5), 2]),
    ({"ln": {"abs": "v"}}, {"v": 1}, [np.log(2), np.log(3.5), 0]),
    ({"exp": "$score"}, {}, [np.e, np.e ** 2, 1]),
    ({"key": "tag", "match": {"value": "x"}}, {}, [1, 0, 1]),
    ({"lin_decay": {"x": "v", "scale": 4}}, {"v": 0}, [0.75, 1 - .5 / 4 * 3.5, 1]),
    ({"exp_decay": {"x": "v", "target": 1, "midpoint": .25}}, {"v": 1},
     [.25, .25 ** 4.5, 1]),
    ({"gauss_decay": {"x": "v", "scale": 2}}, {"v": 0}, [.5, .5 ** (3.5 ** 2 / 4), 1]),
    ({"sum": [{"datetime_key": "dt"}, {"neg": {"datetime": "2024-01-01T00:00:00Z"}}]}, {},
     [86400, 0, 2 * 86400]),
])
def test_formula_operators(expr: Any, defaults: dict[str, Any], want: list[float]) -> None:
    got = parse_formula(expr, defaults).evaluate(INPUTS)
    assert got.dtype == np.float32
    assert np.allclose(got, want, rtol=1e-5)


def test_geo_distance() -> None:
    got = parse_formula({"geo_distance": {"origin": {"lon": 0, "lat": 0}, "to": "loc"}},
                        {}).evaluate(INPUTS)
    one_degree = 6371008.8 * np.pi / 180
    assert np.allclose(got, [0, one_degree, one_degree], rtol=1e-5)


@pytest.mark.parametrize(("expr", "defaults", "exc", "message"), [
    ("v", {}, BadInput, "No value found for v in the payload nor the formula defaults"),
    ("tag", {}, BadInput, "Expected number value for tag in the payload and/or in the formula "
     "defaults. Error: Value is not a number"),
    ({"div": {"left": 1, "right": "$score[1]"}}, {}, BadInput,
     "The expression 1.0/0.0 produced a non-finite number"),
    ({"sqrt": {"neg": "$score"}}, {}, BadInput, "The expression √-1.0 produced a non-finite number"),
    ({"ln": 0}, {}, BadInput, "The expression ln(0.0) produced a non-finite number"),
    ({"mult": 3}, {}, BadRequest, "formula: `mult` takes a list of expressions"),
    (True, {}, BadRequest, "formula: invalid expression True"),
    ("$score[x]", {}, BadRequest, "Invalid score pattern: $score[x]"),
    ({"exp_decay": {"x": 1, "midpoint": 1}}, {}, BadRequest,
     "Decay midpoint should be in the range (0.0, 1.0), got 1.0"),
    ({"lin_decay": {"x": 1, "scale": 0}}, {}, BadRequest, "Scale must be non-zero positive, got 0.0"),
    ({"datetime": "yesterday"}, {}, BadRequest, "Expected datetime in supported format for yesterday"),
    ({"bogus": 1}, {}, BadRequest, "unknown filter condition: ['bogus']"),
])
def test_formula_errors(expr: Any, defaults: dict[str, Any], exc: type, message: str) -> None:
    with pytest.raises(exc) as info:
        parse_formula(expr, defaults).evaluate(INPUTS)
    assert info.value.detail == message
