"""Recommendation queries, in process: each strategy vs a plain nearest query, same data.

    .venv/bin/python -m bench.recommend [--quick] [--points 100000] [--dim 128]

Clustered unit vectors (bench/data.py, as the ANN bench; Cosine), one collection. Each query: 5 positive and 2 negative
example point ids (random), top-10, through the universal query path (body → plan →
engine.query.query_points), once on the exact scan (no HNSW graph) and once after the
collection's HNSW graph is built (`--no-index` skips that): average_vector (one computed
vector, a nearest search), best_score and sum_scores (exact: one GEMM of every row against
the 7 examples; with the graph: the graph neighbours of their leads, then that GEMM over the
candidates only). The baseline is a nearest query with a random vector. Prints QPS per kind
(queries one by one, and all as one batch), the one-by-one ratio to the baseline, and with the
graph recall@10 against the same query with `params.exact`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from api.parse.reads import query_request
from bench import data
from engine.catalog import Catalog
from engine.operations import Upsert, VectorRows
from engine.query import query_points


def _qps(coll: Any, bodies: list[dict[str, Any]]) -> float:
    query_points(coll, [query_request(coll, bodies[0])])  # warm-up
    t0 = time.perf_counter()
    for b in bodies:
        query_points(coll, [query_request(coll, b)])
    return len(bodies) / (time.perf_counter() - t0)


def _batch_qps(coll: Any, bodies: list[dict[str, Any]]) -> float:
    """All queries as one batch (POST /points/query/batch): one GEMM per segment for all."""
    query_points(coll, [query_request(coll, bodies[0])])  # warm-up
    t0 = time.perf_counter()
    query_points(coll, [query_request(coll, b) for b in bodies])
    return len(bodies) / (time.perf_counter() - t0)


def _recall(coll: Any, bodies: list[dict[str, Any]]) -> float:
    hits = total = 0
    for b in bodies:
        got = {p["id"] for p in query_points(coll, [query_request(coll, b)])[0]}
        exact = {p["id"] for p in query_points(coll, [query_request(
            coll, {**b, "params": {"exact": True}})])[0]}
        hits, total = hits + len(got & exact), total + len(exact)
    return hits / max(total, 1)


def _round(coll: Any, qs: np.ndarray, ex: list[list[int]], graph: bool) -> None:
    nearest = [{"query": q.tolist(), "limit": 10} for q in qs]
    base = _qps(coll, nearest)
    print(f"{'HNSW graph' if graph else 'exact scan'}:")
    rec = f"   recall@10 {_recall(coll, nearest):.3f}" if graph else ""
    print(f"nearest (baseline): {base:8.1f} QPS{rec}")
    for strategy in ("average_vector", "best_score", "sum_scores"):
        bodies = [{"query": {"recommend": {"positive": e[:5], "negative": e[5:],
                                           "strategy": strategy}}, "limit": 10}
                  for e in ex]
        qps, batch = _qps(coll, bodies), _batch_qps(coll, bodies)
        rec = f"   recall@10 {_recall(coll, bodies):.3f}" if graph else ""
        print(f"{strategy:>18}: {qps:8.1f} QPS  ratio to nearest {qps / base:.2f}   "
              f"as one batch: {batch:8.1f} QPS{rec}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="10k points, 20 queries (smoke test)")
    ap.add_argument("--no-index", action="store_true", help="the exact scan only")
    args = ap.parse_args()
    n, d, m = args.points, args.dim, args.queries
    if args.quick:
        n, m = 10_000, 20
    rng = np.random.default_rng(0)
    x = data.points(n, d)  # the clustered unit vectors of the ANN bench
    qs = data.queries(2 * m, d)
    tmp = tempfile.mkdtemp(prefix="quiver-bench-recommend-")
    try:
        cat = Catalog(os.path.join(tmp, "storage"))
        cat.load()
        coll = cat.create("reco", {"vectors": {"size": d, "distance": "Cosine"},
                                   "optimizers_config": {"indexing_threshold": 1000}})
        step = 20_000
        for s in range(0, n, step):
            e = min(n, s + step)
            coll.write(Upsert(list(range(s, e)), {"": VectorRows(np.arange(e - s), x[s:e])},
                              [{} for _ in range(e - s)]))
        ex = [rng.choice(n, 7, replace=False).tolist() for _ in range(m)]
        print(f"recommend: {n} points x {d}-d Cosine, 5 positive + 2 negative ids, top-10, "
              f"{m} queries ({len(coll.segments)} segment(s))")
        _round(coll, qs[:m], ex, graph=False)
        if not args.no_index:
            t0 = time.perf_counter()
            while coll.build_pending_index():
                pass
            print(f"(HNSW graph built in {time.perf_counter() - t0:.1f} s)")
            _round(coll, qs[m:], ex, graph=True)
        cat.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
