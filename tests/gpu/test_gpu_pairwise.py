"""gpu/pairwise.py: the numpy path against a brute-force float64 reference, and the device
path (cupy: one GEMM + argpartition) against numpy on the same data (the `gpu` tests need
CUDA; the others run everywhere)."""

from __future__ import annotations

import numpy as np
import pytest

from gpu import pairwise
from gpu.pairwise import nearest_others

METRICS = ["ip", "l2", "l1"]


def _data(seed: int, s: int = 300, d: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((s, d)).astype(np.float32)


def _reference(rows: np.ndarray, metric: str) -> np.ndarray:
    x = rows.astype(np.float64)
    if metric == "ip":
        sim = x @ x.T
    elif metric == "l2":
        sim = -((x[:, None] - x[None]) ** 2).sum(-1)
    else:
        sim = -np.abs(x[:, None] - x[None]).sum(-1)
    np.fill_diagonal(sim, -np.inf)
    return sim


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 7, 299, 500])
def test_numpy_path_matches_brute_force(metric: str, k: int) -> None:
    rows = _data(0)
    cols, sim = nearest_others(np, rows, k, metric)
    ref = _reference(rows, metric)
    kk = min(k, len(rows) - 1)
    assert cols.shape == sim.shape == (len(rows), kk)
    assert not (cols == np.arange(len(rows))[:, None]).any()  # never itself
    want = -np.sort(-ref, axis=1)[:, :kk]
    np.testing.assert_allclose(sim, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.take_along_axis(ref, cols, axis=1), want, rtol=1e-4, atol=1e-3)


def test_ties_keep_index_order_and_l1_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = np.repeat(_data(1, 4, 3), 3, axis=0)  # every vector three times
    monkeypatch.setattr(pairwise, "L1_BLOCK_BYTES", 1)  # one row per block
    for metric in METRICS:
        cols, _ = nearest_others(np, rows, 2, metric)
        if metric != "ip":  # the two copies are at distance 0, in index order
            groups = np.arange(len(rows)) // 3
            want = np.array([[j for j in range(g * 3, g * 3 + 3) if j != i]
                             for i, g in enumerate(groups)])
            assert (cols == want).all()


@pytest.mark.parametrize("metric", METRICS)
def test_row_blocks_give_the_same_result(metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _data(4, 97)
    want = nearest_others(np, rows, 5, metric)
    monkeypatch.setattr(pairwise, "SIM_BLOCK_BYTES", 4 * 97 * 10)  # blocks of 10 rows
    got = nearest_others(np, rows, 5, metric)
    assert (got[0] == want[0]).all()
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)  # BLAS blocks may round apart


def test_fewer_than_two_rows() -> None:
    cols, sim = nearest_others(np, _data(2, 1), 3, "ip")
    assert cols.shape == sim.shape == (1, 0)


@pytest.mark.gpu
@pytest.mark.parametrize("metric", METRICS)
def test_device_path_matches_numpy(metric: str) -> None:
    import cupy as cp

    rows = _data(3, 1000, 64)
    want_cols, want_sim = nearest_others(np, rows, 10, metric)
    cols, sim = nearest_others(cp, cp.asarray(rows), 10, metric)
    np.testing.assert_allclose(cp.asnumpy(sim), want_sim, rtol=1e-4, atol=1e-3)
    ref = _reference(rows, metric)
    np.testing.assert_allclose(np.take_along_axis(ref, cp.asnumpy(cols), axis=1),
                               np.take_along_axis(ref, want_cols, axis=1), rtol=1e-4, atol=1e-3)
