"""engine/ivf.py on a FAISS GPU build: IVF-Flat / IVF-PQ / CAGRA trained and searched on the
device, serialised through the CPU form and rehydrated on the GPU without retraining.
Skips, saying why, where faiss has no GPU (faiss-cpu, or no device)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import ivf

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ivf.faiss_gpus() == 0,
                       reason="SKIP: faiss has no GPU support here (faiss.get_num_gpus() == 0; "
                              "install faiss-gpu-cu12-cuvs on a CUDA device)"),
]


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((50, 64)).astype(np.float32) * 3
    x = centers[rng.integers(0, 50, 20_000)] + rng.standard_normal((20_000, 64))
    q = centers[rng.integers(0, 50, 64)] + rng.standard_normal((64, 64))
    return x.astype(np.float32), q.astype(np.float32)


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq", "cagra"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_gpu_index_recall_round_trip_and_mask(kind: str, metric: str) -> None:
    if kind == "cagra" and "CUVS" not in ivf.faiss.get_compile_options():
        pytest.skip("SKIP: this faiss GPU build has no cuVS (CAGRA)")
    x, q = _data()
    spec = ivf.IvfSpec(kind, nprobe=32, gpu=True)
    index = ivf.IvfIndex.build(x, metric, spec)
    assert index.on_gpu and index.rows == len(x)
    exact = q @ x.T if metric == "ip" else -np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))
    want = np.argsort(-exact, axis=1)[:, :10]
    sims, rows = index.search(q, 10, 128, None)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, want, strict=True)])
    assert recall >= 0.85, recall
    np.testing.assert_allclose(sims, np.take_along_axis(exact, rows, 1), rtol=1e-2, atol=1e-2)

    before = ivf.trainings()
    back = ivf.IvfIndex.from_blob(index.blob(), x, metric, spec)
    assert ivf.trainings() == before and back.on_gpu and back.kind == kind
    _, rows2 = back.search(q, 10, 128, None)
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, rows2, strict=True)])
    assert agree >= 0.95

    mask = np.random.default_rng(2).random(len(x)) < 0.5
    _, rows3 = index.search(q, 10, 128, mask)
    assert mask[rows3[rows3 >= 0]].all()
    assert (rows3 >= 0).mean() >= 0.9
