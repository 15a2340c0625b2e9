"""A hybrid query's cost against its parts, in process: dense (HNSW) + sparse, fused by RRF.

    .venv/bin/python -m bench.hybrid [--docs 100000] [--dim 128] [--queries 200]

One collection holds a dense vector `d` (Cosine, HNSW built before timing) and a sparse
vector `s` (Zipf vocabulary, as bench.sparse). For the same queries it times each leaf alone
(`query` + `using`, limit 20) and the hybrid request that prefetches both and fuses them with
RRF (limit 10), through the same parse → plan → execute path as POST /points/query. Prints
p50/p95 of each and the hybrid's p50 over the slower leaf's (target ≤ 2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from api.parse import reads
from api.parse.writes import apply_body
from bench.sparse import zipf_rows
from engine import query
from engine.catalog import Catalog
from gpu import xp


def _p(times: list[float]) -> dict[str, float]:
    ts = sorted(times)
    return {"p50_ms": statistics.median(ts) * 1e3, "p95_ms": ts[int(0.95 * (len(ts) - 1))] * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    xp.configure("false")  # the CPU path is measured
    rng = np.random.default_rng(0)
    n, dim = args.docs, args.dim
    dense = rng.standard_normal((n, dim)).astype(np.float32)
    sparse = zipf_rows(rng, n, 100, 30_000)
    qsparse = zipf_rows(rng, args.queries, 10, 30_000)
    qdense = rng.standard_normal((args.queries, dim)).astype(np.float32)
    tmp = tempfile.mkdtemp(prefix="quiver-bench-hybrid-")
    try:
        cat = Catalog(os.path.join(tmp, "storage"), wal_fsync=False)
        cat.load()
        coll = cat.create("h", {"vectors": {"d": {"size": dim, "distance": "Cosine"}},
                                "sparse_vectors": {"s": {}}})
        t = time.perf_counter()
        for lo in range(0, n, 5000):
            hi = min(n, lo + 5000)
            points = []
            for i in range(lo, hi):
                row = sparse.row(i)
                points.append({"id": i, "vector": {
                    "d": dense[i].tolist(),
                    "s": {"indices": row.indices.tolist(), "values": row.values.tolist()}}})
            apply_body(coll, "upsert", {"points": points})
        ingest = time.perf_counter() - t
        t = time.perf_counter()
        while coll.build_pending_index():
            pass
        build = time.perf_counter() - t
        print(f"{n} points, dense {dim}-d + sparse ~100 nnz; ingest {ingest:.1f} s, "
              f"HNSW {build:.1f} s, indexed {coll.info()['indexed_vectors_count']}")

        def body(kind: str, j: int) -> dict[str, Any]:
            row = qsparse.row(j)
            s = {"indices": row.indices.tolist(), "values": row.values.tolist()}
            d = qdense[j].tolist()
            if kind == "dense":
                return {"query": d, "using": "d", "limit": 20}
            if kind == "sparse":
                return {"query": s, "using": "s", "limit": 20}
            return {"prefetch": [{"query": d, "using": "d", "limit": 20},
                                 {"query": s, "using": "s", "limit": 20}],
                    "query": {"fusion": "rrf"}, "limit": 10}

        res: dict[str, dict[str, float]] = {}
        for kind in ("dense", "sparse", "hybrid"):
            times = []
            for j in range(args.queries):
                b = body(kind, j)
                t = time.perf_counter()
                out = query.query_points(coll, [reads.query_request(coll, b)])[0]
                times.append(time.perf_counter() - t)
                assert out
            res[kind] = _p(times[5:])
            print(f"{kind:7s} p50 {res[kind]['p50_ms']:.3f} ms  p95 {res[kind]['p95_ms']:.3f} ms")
        slower = max(res["dense"]["p50_ms"], res["sparse"]["p50_ms"])
        print(f"hybrid / slower leaf (p50): {res['hybrid']['p50_ms'] / slower:.2f} "
              f"(sum of the leaves: {res['dense']['p50_ms'] + res['sparse']['p50_ms']:.3f} ms)")
        cat.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
