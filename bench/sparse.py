"""Sparse search, in process: Quiver vs qdrant-edge (the real Qdrant engine) on the same data.

    .venv/bin/python -m bench.sparse [--docs 100000] [--nnz 100] [--vocab 30000] [--terms 10]

Documents have ~`nnz` distinct terms drawn from a Zipf vocabulary (s = 1.1), queries `terms`
distinct terms from the same distribution; top-10 by dot product, no IDF. Prints p50/p95 of
single queries (after a warm-up that builds both engines' indexes) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from engine.catalog import Catalog
from engine.operations import SparseRows, Upsert
from engine.plan import SearchSpec
from engine.query import search_batch
from engine.sparse import SparseBatch, SparseVector


def zipf_rows(rng: np.random.Generator, n: int, k: int, vocab: int) -> SparseBatch:
    """n rows of up to k distinct Zipf-distributed terms (duplicates drawn are dropped)."""
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    terms = rng.choice(vocab, size=(n, k * 3 // 2), p=p).astype(np.uint32)  # ~k distinct
    terms.sort(axis=1)
    keep = np.ones_like(terms, bool)
    keep[:, 1:] = terms[:, 1:] != terms[:, :-1]
    lengths = keep.sum(axis=1)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    values = rng.random(int(indptr[-1]), dtype=np.float32) + np.float32(0.01)
    return SparseBatch(indptr, terms[keep], values)


def percentiles(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def bench_quiver(docs: SparseBatch, queries: list[SparseVector]) -> tuple[dict[str, float],
                                                                          list[list[int]]]:
    tmp = tempfile.mkdtemp(prefix="quiver-bench-sparse-")
    try:
        cat = Catalog(os.path.join(tmp, "storage"))
        cat.load()
        coll = cat.create("sparse", {"sparse_vectors": {"s": {}}})
        n = len(docs)
        t = time.perf_counter()
        for s in range(0, n, 10000):
            e = min(n, s + 10000)
            rows = docs.take(np.arange(s, e))
            coll.write(Upsert(list(range(s, e)), {}, [{} for _ in range(e - s)],
                              {"s": SparseRows(np.arange(e - s, dtype=np.int64), rows)}))
        ingest = time.perf_counter() - t

        def one(q: SparseVector) -> list[int]:
            spec = SearchSpec(q, "s", None, 10, 0, None, False, False)  # type: ignore[arg-type]
            return [h["id"] for h in search_batch(coll, [spec])[0]]

        t = time.perf_counter()
        one(queries[0])  # builds the posting lists
        build = time.perf_counter() - t
        times, ids = [], []
        for q in queries:
            t = time.perf_counter()
            ids.append(one(q))
            times.append(time.perf_counter() - t)
        cat.close()
        return {"ingest_s": ingest, "first_query_s": build, **percentiles(times)}, ids
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_edge(docs: SparseBatch, queries: list[SparseVector]) -> tuple[dict[str, Any],
                                                                        list[list[int]]]:
    import qdrant_edge as qe  # noqa: PLC0415 - optional

    tmp = tempfile.mkdtemp(prefix="quiver-bench-edge-sparse-")
    try:
        cfg = qe.EdgeConfig(sparse_vectors={"s": qe.EdgeSparseVectorParams()},
                            optimizers=qe.EdgeOptimizersConfig(default_segment_number=1,
                                                               max_segment_size=1 << 30))
        shard = qe.EdgeShard.create(os.path.join(tmp, "shard"), cfg)
        n = len(docs)
        ends = docs.indptr.tolist()
        idx, vals = docs.indices.tolist(), docs.values.tolist()
        t = time.perf_counter()
        for s in range(0, n, 1000):
            pts = [qe.Point(i, {"s": qe.SparseVector(idx[ends[i]:ends[i + 1]],
                                                     vals[ends[i]:ends[i + 1]])})
                   for i in range(s, min(n, s + 1000))]
            shard.update(qe.UpdateOperation.upsert_points(pts))
        ingest = time.perf_counter() - t
        t = time.perf_counter()
        shard.optimize()
        optimize = time.perf_counter() - t

        def one(q: SparseVector) -> list[int]:
            req = qe.QueryRequest(limit=10, query=qe.Query.Nearest(
                qe.SparseVector(q.indices.tolist(), q.values.tolist()), using="s"),
                with_payload=False, with_vector=False)
            return [p.id for p in shard.query(req)]

        one(queries[0])
        times, ids = [], []
        for q in queries:
            t = time.perf_counter()
            ids.append(one(q))
            times.append(time.perf_counter() - t)
        shard.close()
        return {"ingest_s": ingest, "optimize_s": optimize, **percentiles(times)}, ids
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--nnz", type=int, default=100)
    ap.add_argument("--vocab", type=int, default=30_000)
    ap.add_argument("--terms", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    docs = zipf_rows(rng, args.docs, args.nnz, args.vocab)
    qb = zipf_rows(rng, args.queries, args.terms, args.vocab)
    queries = [SparseVector(qb.row(j).indices, qb.row(j).values) for j in range(len(qb))]
    print(f"{args.docs} docs, {len(docs.indices) / args.docs:.1f} non-zeros each, "
          f"vocabulary {args.vocab}, {args.terms}-term queries, top 10")
    quiver, qids = bench_quiver(docs, queries)
    print("quiver     ", {k: round(v, 3) for k, v in quiver.items()})
    try:
        edge, eids = bench_edge(docs, queries)
    except ImportError:
        print("qdrant-edge not installed")
        return
    print("qdrant-edge", {k: round(v, 3) for k, v in edge.items()})
    same = sum(a == b for a, b in zip(qids, eids, strict=True))
    print(f"same top-10 ids: {same}/{len(queries)} queries")
    print(f"p50 ratio quiver/edge: {quiver['p50_ms'] / edge['p50_ms']:.2f}")


if __name__ == "__main__":
    main()
