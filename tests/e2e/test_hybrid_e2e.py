"""The standard RAG setup through qdrant-client: a hybrid collection (dense + sparse with IDF +
a ColBERT-style multivector), uploaded, queried with prefetches fused by RRF; the same answers
after a restart and from a snapshot recovered into a new collection (from a URL, as the
Qdrant docs show)."""

from __future__ import annotations

from typing import Any

import numpy as np
from openapi_contract import validating_qdrant_client
from qdrant_client import models
from server import QuiverServer

N, DIM, TOK = 300, 16, 8


def _points(rng: np.random.Generator) -> list[models.PointStruct]:
    out = []
    for i in range(N):
        terms = np.sort(rng.choice(200, rng.integers(3, 12), replace=False))
        out.append(models.PointStruct(id=i, payload={"group": i % 4}, vector={
            "dense": rng.standard_normal(DIM).tolist(),
            "colbert": rng.standard_normal((int(rng.integers(2, 6)), TOK)).tolist(),
            "bm25": models.SparseVector(indices=terms.tolist(),
                                        values=(rng.random(len(terms)) + 0.1).tolist())}))
    return out


def _queries(client: Any, coll: str, rng: np.random.Generator) -> list[list[tuple[Any, float]]]:
    out = []
    for j in range(8):
        terms = np.sort(rng.choice(200, 5, replace=False))
        flt = (models.Filter(must=[models.FieldCondition(key="group",
                                                         match=models.MatchValue(value=j % 4))])
               if j % 2 else None)
        res = client.query_points(coll, prefetch=[
            models.Prefetch(query=rng.standard_normal(DIM).tolist(), using="dense", limit=30),
            models.Prefetch(query=models.SparseVector(indices=terms.tolist(),
                                                      values=[1.0] * 5),
                            using="bm25", limit=30),
        ], query=models.FusionQuery(fusion=models.Fusion.RRF), query_filter=flt, limit=10,
            with_payload=True)
        out.append([(p.id, round(p.score, 5)) for p in res.points])
        # ColBERT rescoring of a dense prefetch
        res = client.query_points(coll, prefetch=models.Prefetch(
            query=rng.standard_normal(DIM).tolist(), using="dense", limit=40),
            query=rng.standard_normal((3, TOK)).tolist(), using="colbert", limit=5)
        out.append([(p.id, round(p.score, 4)) for p in res.points])
    return out


def test_hybrid_collection_survives_restart_and_snapshot_recovery(
        fresh_server: QuiverServer) -> None:
    client = validating_qdrant_client(fresh_server.url, timeout=60)
    client.create_collection(
        "docs",
        vectors_config={
            "dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            "colbert": models.VectorParams(
                size=TOK, distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM)),
        },
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)})
    client.upload_points("docs", _points(np.random.default_rng(1)), batch_size=64, wait=True)
    want = _queries(client, "docs", np.random.default_rng(2))
    assert all(want) and len({tuple(w) for w in want}) > 4  # real, varied answers

    fresh_server.restart()
    client = validating_qdrant_client(fresh_server.url, timeout=60)
    assert client.count("docs").count == N
    assert _queries(client, "docs", np.random.default_rng(2)) == want

    snap = client.create_snapshot("docs")
    client.recover_snapshot(
        "copy", f"{fresh_server.url}/collections/docs/snapshots/{snap.name}", wait=True)
    assert _queries(client, "copy", np.random.default_rng(2)) == want
    info = client.get_collection("copy")
    assert info.points_count == N and info.config.params.sparse_vectors is not None
