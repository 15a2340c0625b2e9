"""Quantized search (codes scan + oversampled rescoring) vs exact float search vs faiss's
IndexScalarQuantizer / IndexPQ, on the same data, interleaved per query.

    .venv/bin/python -m bench.quantization [--n 100000] [--dim 128] [--queries 200]

Data: clustered random float32 (L2). For each Quiver quantizer (engine/quantization.py,
scanned by gpu/quantized.py, rescored with the originals, oversampling 2) and its faiss peer
(`IndexScalarQuantizer` QT_8bit_uniform, `IndexPQ` with the same sub-quantizer count, then
the same rescoring), prints recall@10 against exact search, single-query QPS, and bytes per
vector; exact float search (gpu.flat) is the baseline row. Quiver's host codes are held and
scanned by faiss (gpu/quantized.py); the "numpy scan" rows score the same codes with the numpy
fallback (what the host did before), so the two are compared in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faiss
import numpy as np

from engine import quantization as Q
from gpu import flat

K, OVERSAMPLING = 10, 2.0


def data(n: int, dim: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((64, dim)).astype(np.float32) * 3
    x = centres[rng.integers(0, 64, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    q = centres[rng.integers(0, 64, nq)] + rng.standard_normal((nq, dim)).astype(np.float32)
    return x.astype(np.float32), q.astype(np.float32)


def rescore(x: np.ndarray, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    c = cand[cand >= 0]
    d = ((x[c] - q) ** 2).sum(axis=1)
    return c[np.argsort(d, kind="stable")[:K]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    faiss.omp_set_num_threads(1)
    x, qs = data(a.n, a.dim, a.queries)
    truth = [flat.search(x, q[None], K, "l2")[1][0] for q in qs]
    want = int(K * OVERSAMPLING)
    runs: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
        "exact float32": (lambda q: flat.search(x, q[None], K, "l2")[1][0], 4.0 * a.dim)}
    for raw in ({"scalar": {"type": "int8"}}, {"product": {"compression": "x16"}},
                {"binary": {"encoding": "two_bits"}}):
        cfg = Q.parse_config(raw)
        rec = Q.encode_rows(Q.train(cfg, x, "l2"), x)
        name = f"quiver {cfg.kind} {list(raw[cfg.kind].values())[-1]}"
        runs[name] = (lambda q, rec=rec: rescore(x, q, rec.scan(q[None], want, a.n, None)[1][0]),
                      rec.nbytes() / a.n)
        if rec.index is not None:  # the same codes through the numpy fallback
            codes = np.array(rec.codes)
            runs[name + " (numpy scan)"] = (
                lambda q, rec=rec, codes=codes: rescore(
                    x, q, rec.quantizer.scan(codes, rec.norms, q[None], want, None)[1][0]),
                rec.nbytes() / a.n)
    sq = faiss.IndexScalarQuantizer(a.dim, faiss.ScalarQuantizer.QT_8bit_uniform)
    sq.train(x)
    sq.add(x)
    runs["faiss SQ8 uniform"] = (lambda q: rescore(x, q, sq.search(q[None], want)[1][0]),
                                 sq.sa_code_size())
    m = Q.ProductQuantizer.subquantizers(a.dim, 16)
    pq = faiss.IndexPQ(a.dim, m, 8)
    pq.train(x[: min(a.n, 1 << 16)])
    pq.add(x)
    runs["faiss PQ x16"] = (lambda q: rescore(x, q, pq.search(q[None], want)[1][0]),
                            pq.sa_code_size())
    times = {name: 0.0 for name in runs}
    hits = {name: 0.0 for name in runs}
    for i, q in enumerate(qs):  # interleaved: every method sees the same machine load
        for name, (fn, _) in runs.items():
            t = time.perf_counter()
            got = fn(q)
            times[name] += time.perf_counter() - t
            hits[name] += len(set(got.tolist()) & set(truth[i].tolist())) / K
    print(f"n={a.n} dim={a.dim} queries={a.queries} k={K} oversampling={OVERSAMPLING}")
    print(f"{'method':36s} {'recall@10':>9s} {'QPS':>8s} {'bytes/vec':>9s}")
    for name, (_, size) in runs.items():
        print(f"{name:36s} {hits[name] / len(qs):9.3f} {len(qs) / times[name]:8.1f} "
              f"{size:9.1f}")


if __name__ == "__main__":
    main()
