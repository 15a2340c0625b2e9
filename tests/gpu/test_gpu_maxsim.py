"""gpu/maxsim.py: the device path (one GEMM + an atomic segmented max) against numpy's
`maximum.reduceat` path on the same data (the `gpu` test needs CUDA; the numpy one runs
everywhere and checks the numpy path against a per-point loop)."""

from __future__ import annotations

import numpy as np
import pytest

from gpu.maxsim import maxsim


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, 500)
    tokens = rng.standard_normal((int(lengths.sum()), 32)).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    query = rng.standard_normal((6, 32)).astype(np.float32)
    return query, tokens, starts


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_numpy_path_matches_a_per_point_loop(metric: str) -> None:
    query, tokens, starts = _data()
    got = maxsim(np, query, tokens, starts, metric)
    ends = np.append(starts[1:], len(tokens))
    for p, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        t = tokens[a:b]
        sim = query @ t.T if metric == "ip" else -((query[:, None] - t[None]) ** 2).sum(-1)
        assert got[p] == pytest.approx(float(sim.max(axis=1).sum()), rel=1e-4, abs=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_device_path_matches_numpy(metric: str) -> None:
    import cupy as cp

    query, tokens, starts = _data(1)
    want = maxsim(np, query, tokens, starts, metric)
    got = maxsim(cp, cp.asarray(query), cp.asarray(tokens), cp.asarray(starts), metric)
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-5, atol=1e-3)
