"""gpu/flat.py: the xp (numpy) path is the oracle; faiss and the device path must agree with it."""

from __future__ import annotations

import numpy as np
import pytest

from gpu import flat, topk
from gpu.xp import get_xp

METRICS = ["ip", "l2", "l1"]


def brute(x: np.ndarray, q: np.ndarray, k: int, metric: str, mask=None):
    if metric == "ip":
        s = q @ x.T
    elif metric == "l2":
        s = -np.sqrt(((q[:, None, :] - x[None]) ** 2).sum(-1))
    else:
        s = -np.abs(q[:, None, :] - x[None]).sum(-1)
    if mask is not None:
        s[:, ~mask] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    return (rng.standard_normal((700, 24)).astype(np.float32),
            rng.standard_normal((9, 24)).astype(np.float32))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("use_faiss", [True, False], ids=["faiss", "xp"])
@pytest.mark.parametrize("mask_kind", ["none", "dense", "sparse", "empty"])
def test_search_matches_brute_force(data, metric, use_faiss, mask_kind) -> None:
    x, q = data
    rng = np.random.default_rng(5)
    mask = {"none": None, "dense": rng.random(len(x)) < 0.8,
            "sparse": rng.random(len(x)) < 0.05, "empty": np.zeros(len(x), bool)}[mask_kind]
    vals, rows = flat.search(x, q, 10, metric, mask, use_faiss=use_faiss)
    if mask_kind == "empty":
        assert vals.shape[1] == 0
        return
    want_vals, want_rows = brute(x.astype(np.float64), q.astype(np.float64), 10, metric, mask)
    k = min(10, int(mask.sum()) if mask is not None else len(x))
    np.testing.assert_allclose(vals[:, :k], want_vals[:, :k], rtol=1e-4, atol=1e-4)
    assert (rows[:, :k] == want_rows[:, :k]).mean() > 0.99  # ties may swap
    if mask is not None:
        assert mask[rows[rows >= 0]].all()


def test_k_larger_than_rows(data) -> None:
    x, q = data
    vals, rows = flat.search(x[:3], q, 10, "ip")
    assert vals.shape == (9, 3) and sorted(rows[0].tolist()) == [0, 1, 2]


def test_topk_is_a_selection_and_merge_orders(data) -> None:
    rng = np.random.default_rng(1)
    s = rng.standard_normal((4, 1000)).astype(np.float32)
    v, i = topk.topk(s, 7)
    assert (np.take_along_axis(s, i, 1) == v).all()
    assert (np.diff(v, axis=1) <= 0).all()
    np.testing.assert_array_equal(v, -np.sort(-s, axis=1)[:, :7])
    a = (np.array([[5.0, 1.0]], np.float32), np.array([[10, 11]]))
    b = (np.array([[3.0, 2.0]], np.float32), np.array([[20, 21]]))
    mv, mk = topk.merge([a, b], 3)
    assert mk.tolist() == [[10, 20, 21]] and mv.tolist() == [[5.0, 3.0, 2.0]]


@pytest.mark.gpu
@pytest.mark.parametrize("metric", METRICS)
def test_device_path_matches_numpy(data, metric) -> None:
    cp = get_xp()
    x, q = data
    mask = np.random.default_rng(2).random(len(x)) < 0.6
    dv, dr = flat.search(cp.asarray(x), q, 10, metric, mask, use_faiss=False)
    hv, hr = flat.search(x, q, 10, metric, mask, use_faiss=False)
    np.testing.assert_allclose(dv, hv, rtol=1e-4, atol=1e-4)
    assert (dr == hr).mean() > 0.99
