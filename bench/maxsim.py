"""MaxSim (multivector) search, in process: Quiver vs a plain numpy reference, same data.

    .venv/bin/python -m bench.maxsim [--docs 10000] [--tokens 32] [--dim 128] [--qtokens 32]

Documents have `tokens` token vectors each (Dot, random normal float32), queries `qtokens`;
top-10 by MaxSim. Quiver: `engine.query.search_batch` over a collection holding the
documents (one GEMM per segment, segmented max, sum: gpu/maxsim.py). The reference: numpy
over the same (docs × tokens, dim) matrix, one GEMM, max over each document's tokens
(reshape: equal lengths), sum, argpartition. Prints p50/p95 of single queries and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from engine.catalog import Catalog
from engine.multivector import MultiBatch, MultiVector
from engine.operations import MultiRows, Upsert
from engine.plan import SearchSpec
from engine.query import search_batch


def percentiles(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def reference(tokens: np.ndarray, docs: int, per_doc: int, q: np.ndarray) -> np.ndarray:
    sim = q @ tokens.T  # (q, docs * per_doc)
    scores = sim.reshape(len(q), docs, per_doc).max(axis=2).sum(axis=0)
    top = np.argpartition(-scores, 10)[:10]
    return top[np.argsort(-scores[top])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--qtokens", type=int, default=32)
    ap.add_argument("--queries", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, t, d = args.docs, args.tokens, args.dim
    tokens = rng.standard_normal((n * t, d), dtype=np.float32)
    queries = [rng.standard_normal((args.qtokens, d), dtype=np.float32)
               for _ in range(args.queries)]
    tmp = tempfile.mkdtemp(prefix="quiver-bench-maxsim-")
    try:
        cat = Catalog(os.path.join(tmp, "storage"))
        cat.load()
        coll = cat.create("mv", {"vectors": {"m": {"size": d, "distance": "Dot",
                                                   "multivector_config":
                                                   {"comparator": "max_sim"}}}})
        step = 2000
        for s in range(0, n, step):
            e = min(n, s + step)
            offsets = np.arange(0, (e - s) * t + 1, t, dtype=np.int64)
            batch = MultiBatch(offsets, tokens[s * t : e * t])
            coll.write(Upsert(list(range(s, e)), {}, [{} for _ in range(e - s)],
                              multi={"m": MultiRows(np.arange(e - s), batch)}))
        times_q, times_r = [], []
        agree = 0
        for q in [queries[0], *queries]:  # the first one warms up both
            spec = SearchSpec(MultiVector(q), "m", None, 10, 0, None, False, False)  # type: ignore
            t0 = time.perf_counter()
            hits = search_batch(coll, [spec])[0]
            t1 = time.perf_counter()
            ref = reference(tokens, n, t, q)
            t2 = time.perf_counter()
            times_q.append(t1 - t0)
            times_r.append(t2 - t1)
            agree += [h["id"] for h in hits] == ref.tolist()
        quiver, numpy_ref = percentiles(times_q[1:]), percentiles(times_r[1:])
        print(f"MaxSim {n} docs x {t} tokens x {d}-d, {args.qtokens}-token queries, top-10, "
              f"{args.queries} queries ({len(coll.segments)} segment(s))")
        print(f"quiver in process: p50 {quiver['p50_ms']:.2f} ms  p95 {quiver['p95_ms']:.2f} ms")
        print(f"numpy reference:   p50 {numpy_ref['p50_ms']:.2f} ms  p95 "
              f"{numpy_ref['p95_ms']:.2f} ms")
        print(f"ratio quiver/numpy p50: {quiver['p50_ms'] / numpy_ref['p50_ms']:.2f}  "
              f"(same top-10: {agree - 1}/{args.queries})")
        cat.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
