"""Facet counts and the distance matrix, in process: Quiver vs a plain numpy reference.

    .venv/bin/python -m bench.facet_matrix            # facet over 1M points, 1,000-point matrix
    .venv/bin/python -m bench.facet_matrix --quick    # 100k points, a 300-point matrix

Facet: N points, payload `{"tag": "t<k>"}` with k uniform over 1,000 values, a keyword index
on `tag`; `engine.facet.facet` with no filter and with a filter keeping ~half the points
(an integer range), vs numpy `np.unique(return_counts)` over the same codes (the reference
knows the codes already: it does no payload work at all). Matrix: pairs for a sample of
`--sample` points (128-d, Cosine) with limit 10, `engine.matrix.distance_matrix` (sampling,
gathering, one GEMM, argpartition; on the device when the collection is there) vs numpy on the
same rows (GEMM + argpartition + sort). Prints p50 of `--repeats` runs and the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.catalog import Catalog
from engine.facet import FacetRequest, facet
from engine.filters import parse_filter
from engine.matrix import MatrixRequest, distance_matrix
from engine.operations import Upsert, VectorRows


def p50_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3), out


def matrix_reference(rows: np.ndarray, k: int) -> np.ndarray:
    sim = rows @ rows.T
    np.fill_diagonal(sim, -np.inf)
    cand = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(sim, cand, axis=1)
    return np.take_along_axis(cand, np.argsort(-top, axis=1), axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="points (1M full, 100k quick)")
    ap.add_argument("--values", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=None, help="matrix sample (1000 / 300)")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    sample = args.sample or (300 if args.quick else 1000)
    repeats = args.repeats or (3 if args.quick else 5)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, args.values, n)
    tmp = tempfile.mkdtemp(prefix="quiver-bench-facet-")
    try:
        cat = Catalog(os.path.join(tmp, "storage"))
        cat.load()
        coll = cat.create("f", {"vectors": {"size": 4, "distance": "Dot"}})
        t0 = time.perf_counter()
        step = 50_000
        for s in range(0, n, step):
            e = min(n, s + step)
            vec = VectorRows(np.arange(e - s), np.zeros((e - s, 4), np.float32))
            coll.write(Upsert(list(range(s, e)), {"": vec},
                              [{"tag": f"t{c}", "n": i} for i, c in
                               zip(range(s, e), codes[s:e].tolist(), strict=True)]))
        coll.create_index("tag", "keyword")
        coll.create_index("n", "integer")
        load_s = time.perf_counter() - t0
        print(f"facet: {n} points, {args.values} distinct keywords (loaded and indexed in "
              f"{load_s:.1f} s, {len(coll.segments)} segment(s))")
        half = parse_filter({"must": [{"key": "n", "range": {"lt": n // 2}}]})
        for label, pred, ref_codes in (("no filter", None, codes),
                                       ("filter 50%", half, codes[: n // 2])):
            def run(p: Any = pred) -> Any:
                return facet(coll.view(), FacetRequest("tag", 10, p))

            q_ms, hits = p50_ms(run, repeats)

            def ref(c: np.ndarray = ref_codes) -> Any:
                vals, cnt = np.unique(c, return_counts=True)
                return cnt[np.argsort(-cnt, kind="stable")[:10]]

            r_ms, ref_counts = p50_ms(ref, repeats)
            same = [h["count"] for h in hits] == ref_counts.tolist()
            print(f"  {label:10s}: quiver p50 {q_ms:8.2f} ms  numpy np.unique p50 {r_ms:7.2f} ms"
                  f"  ratio {q_ms / r_ms:5.2f}  (same top-10 counts: {same})")

        d = 128
        vecs = rng.standard_normal((sample, d)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        mcoll = cat.create("m", {"vectors": {"size": d, "distance": "Cosine"}})
        mcoll.write(Upsert(list(range(sample)), {"": VectorRows(np.arange(sample), vecs)},
                           [{} for _ in range(sample)]))
        req = MatrixRequest(sample=sample, limit=10)
        q_ms, m = p50_ms(lambda: distance_matrix(mcoll.view(), req), repeats)
        r_ms, ref_cols = p50_ms(lambda: matrix_reference(vecs, 10), repeats)
        agree = float(np.mean(m.cols == ref_cols))
        pq_ms, _ = p50_ms(lambda: distance_matrix(mcoll.view(), req).pairs(), repeats)
        print(f"matrix: {sample} x {d}-d Cosine sample, limit 10")
        print(f"  quiver distance_matrix p50 {q_ms:7.2f} ms (+ pairs JSON rendering: "
              f"{pq_ms:7.2f} ms)  numpy GEMM + argpartition p50 {r_ms:7.2f} ms  ratio "
              f"{q_ms / r_ms:5.2f}  (same neighbours: {agree:.4f})")
        cat.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
