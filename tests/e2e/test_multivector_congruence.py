"""Multivectors through the real server, against qdrant-client's local mode (the oracle).

Random variable-length multivectors next to a dense vector go into a Quiver collection over
HTTP (responses checked against Qdrant's OpenAPI schema) and into ``QdrantClient(":memory:")``
for Cosine, Dot and Euclid; MaxSim queries (with filters, offsets, thresholds, selectors),
the ColBERT pattern (a dense prefetch rescored by the multivector), deletes, vector updates
and `has_vector` must give the same ids, order and scores; a snapshot recovered into a new
collection answers the same. Bad multivectors are a 400 and store nothing.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking, paired

MV = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)


def _multi(rng: random.Random, dim: int = 8) -> list[list[float]]:
    return [[round(rng.uniform(-1, 1), 4) for _ in range(dim)] for _ in range(rng.randint(1, 6))]


def _points(rng: random.Random, ids: range) -> list[models.PointStruct]:
    out = []
    for i in ids:
        vec: dict[str, Any] = {"d": [rng.uniform(-1, 1) for _ in range(4)]}
        if rng.random() < 0.85:
            vec["m"] = _multi(rng)
        out.append(models.PointStruct(id=i, vector=vec, payload={"g": i % 4}))
    return out


def _close(got: Any, want: Any) -> bool:
    """Vectors equal within float error: dicts by name, (lists of) lists as arrays."""
    if isinstance(want, dict):
        return isinstance(got, dict) and set(got) == set(want) and all(
            _close(got[k], want[k]) for k in want)
    return bool(np.shape(got) == np.shape(want) and np.allclose(got, want, rtol=1e-4,
                                                                   atol=1e-5))


@pytest.mark.parametrize("distance", [models.Distance.COSINE, models.Distance.DOT,
                                      models.Distance.EUCLID])
def test_multivector_congruence(server: Any, collection_name: str, distance: Any) -> None:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    cfg = {"vectors_config": {
        "d": models.VectorParams(size=4, distance=models.Distance.DOT),
        "m": models.VectorParams(size=8, distance=distance, multivector_config=MV,
                                 hnsw_config=models.HnswConfigDiff(m=0))}}
    rng = random.Random(str(distance))
    for client in (remote, local):
        if client.collection_exists(collection_name):
            client.delete_collection(collection_name)
        client.create_collection(collection_name, **cfg)
    info = remote.get_collection(collection_name)
    assert info.config.params.vectors == cfg["vectors_config"]
    points = _points(rng, range(300))
    extra = _multi(rng)
    for client in (remote, local):
        client.upsert(collection_name, points[:200])
        client.upsert(collection_name, points[200:])
        client.upsert(collection_name, models.Batch(ids=[1000, 1001], vectors={
            "m": [extra, extra[:1]], "d": [[1, 0, 0, 0], [0, 1, 0, 0]]}))
        client.delete(collection_name, list(range(0, 300, 11)))
        client.delete_vectors(collection_name, ["m"], [i for i in range(1, 60, 5) if i % 11])
        client.update_vectors(collection_name, [
            models.PointVectors(id=i, vector={"m": _multi(random.Random(i))})
            for i in range(2, 90, 7) if i % 11])

    def both(**kw: Any) -> list[models.ScoredPoint]:
        got = remote.query_points(collection_name, **kw).points
        want = local.query_points(collection_name, **kw).points
        assert_same_ranking(got, want, offset=kw.get("offset") or 0, abs=1e-4)
        for g, w in paired(got, want):
            assert g.payload == w.payload
            if kw.get("with_vectors"):
                assert _close(g.vector, w.vector)
        return got

    qrng = random.Random(7)
    for case in range(12):
        q = _multi(qrng)
        flt = None
        if case % 3 == 1:
            flt = models.Filter(must=[models.FieldCondition(key="g", match=models.MatchAny(
                any=[0, 2]))])
        both(query=q, using="m", limit=qrng.choice([1, 5, 20]), query_filter=flt,
             with_payload=True, with_vectors=case % 4 == 0, offset=case % 2 * 3)
        full = local.query_points(collection_name, query=q, using="m", limit=50).points
        mid = (full[2].score + full[3].score) / 2
        both(query=q, using="m", limit=50, score_threshold=mid)
        # ColBERT: a dense prefetch, rescored by MaxSim (also with a filter inside)
        both(prefetch=models.Prefetch(query=[qrng.uniform(-1, 1) for _ in range(4)],
                                      using="d", limit=30, filter=flt),
             query=q, using="m", limit=10, with_payload=True)
    both(query=5, using="m", limit=5)
    reqs = [models.QueryRequest(query=_multi(qrng), using="m", limit=5, filter=flt)
            for flt in (None, models.Filter(must=[models.FieldCondition(
                key="g", match=models.MatchValue(value=3))]))]
    for g, w in zip(remote.query_batch_points(collection_name, reqs),
                    local.query_batch_points(collection_name, reqs), strict=True):
        assert_same_ranking(g.points, w.points, abs=1e-4)
    got_s, _ = remote.scroll(collection_name, limit=40, with_vectors=["m"])
    want_s, _ = local.scroll(collection_name, limit=40, with_vectors=["m"])
    assert [p.id for p in got_s] == [p.id for p in want_s]
    assert all(_close(g.vector, w.vector) for g, w in zip(got_s, want_s, strict=True))
    flt = models.Filter(must=[models.HasVectorCondition(has_vector="m")])
    assert remote.count(collection_name, count_filter=flt).count == \
        local.count(collection_name, count_filter=flt).count
    got = remote.retrieve(collection_name, [1000, 1001, 1, 2], with_vectors=True)
    want = local.retrieve(collection_name, [1000, 1001, 1, 2], with_vectors=True)
    assert all(_close(g.vector, w.vector) for g, w in zip(got, want, strict=True))
    # snapshot → recover into a new collection → identical answers
    q = _multi(qrng)
    before = remote.query_points(collection_name, query=q, using="m", limit=20).points
    snap = remote.create_snapshot(collection_name)
    assert snap is not None
    copy = collection_name + "_copy"
    remote.recover_snapshot(copy, f"{server.url}/collections/{collection_name}/snapshots/"
                                  f"{snap.name}")
    after = remote.query_points(copy, query=q, using="m", limit=20).points
    assert [(p.id, p.score) for p in after] == [(p.id, p.score) for p in before]
    remote.delete_collection(copy)
    remote.contract.assert_ok()


def test_unnamed_multivector(server: Any, collection_name: str) -> None:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    rng = random.Random(3)
    for client in (remote, local):
        if client.collection_exists(collection_name):
            client.delete_collection(collection_name)
        client.create_collection(collection_name, models.VectorParams(
            size=8, distance=models.Distance.COSINE, multivector_config=MV))
        client.upsert(collection_name, [models.PointStruct(id=i, vector=_multi(random.Random(i)))
                                        for i in range(50)])
        client.upsert(collection_name, models.Batch(ids=[100, 101],
                                                    vectors=[_multi(rng), _multi(rng)]))
    q = _multi(rng)
    assert_same_ranking(remote.query_points(collection_name, query=q, limit=10).points,
                        local.query_points(collection_name, query=q, limit=10).points, abs=1e-4)
    got = remote.retrieve(collection_name, [3], with_vectors=True)[0].vector
    want = local.retrieve(collection_name, [3], with_vectors=True)[0].vector
    assert isinstance(got, list) and _close(got, want)  # a bare list of lists, as Qdrant
    remote.contract.assert_ok()


BAD = [
    [],  # empty
    [[1.0] * 8, [1.0] * 7],  # ragged
    [[1.0] * 7],  # wrong size
    [[1.0] * 7 + [None]],  # null (NaN in JSON)
    [[1.0] * 7 + ["1"]],
    [1.0] * 8,  # a plain vector for a multivector
    {"indices": [1], "values": [1]},
]


def test_multivector_bad_input(http: httpx.Client, collection_name: str) -> None:
    base = f"/collections/{collection_name}"
    http.delete(base)
    mv = {"comparator": "max_sim"}
    for params in ({"datatype": "uint8"}, {"datatype": "float16"}, {"distance": "Manhattan"},
                   {"hnsw_config": {"m": 16}}, {"multivector_config": {"comparator": "sum"}}):
        r = http.put(base, json={"vectors": {"m": {"size": 8, "distance": "Dot",
                                                   "multivector_config": mv, **params}}})
        assert r.status_code == 400, (params, r.text)
        assert r.json()["status"]["error"]
        assert http.get(base).status_code == 404  # nothing created
    assert http.put(base, json={"vectors": {
        "m": {"size": 8, "distance": "Dot", "multivector_config": mv},
        "d": {"size": 8, "distance": "Dot"}}}).status_code == 200
    good = {"id": 1, "vector": {"m": [[1.0] * 8]}}
    for vec in BAD:
        for body in ({"points": [good, {"id": 2, "vector": {"m": vec}}]},
                     {"batch": {"ids": [2], "vectors": {"m": [vec]}}}):
            r = http.put(f"{base}/points?wait=true", json=body)
            assert r.status_code == 400, (vec, r.text)
            assert r.json()["status"]["error"]
    r = http.put(f"{base}/points?wait=true", json={"points": [{"id": 3, "vector": {
        "d": [[1.0] * 8]}}]})  # a multivector for a plain dense vector
    assert r.status_code == 400, r.text
    assert http.post(f"{base}/points/count", json={"exact": True}).json()["result"]["count"] == 0
    assert http.put(f"{base}/points?wait=true", json={"points": [good]}).status_code == 200
    for query, using in (([[1.0] * 7], "m"), ([[1.0] * 8], "d"), ([], "m"),
                         ([[1.0] * 7 + [None]], "m"), ([[1.0] * 8], "nope")):
        r = http.post(f"{base}/points/query", json={"query": query, "using": using})
        assert r.status_code == 400, (query, using, r.text)
    r = http.post(f"{base}/points/query", json={"query": {"nearest": [[1.0] * 8],
                                                          "mmr": {"diversity": 0.5}},
                                                "using": "m"})
    assert r.status_code == 400, r.text
    r = http.post(f"{base}/points/query", json={"query": [[2.0] * 8], "using": "m",
                                                "with_vector": True})
    assert r.status_code == 200
    assert r.json()["result"]["points"][0]["vector"] == {"m": [[1.0] * 8]}
    assert r.json()["result"]["points"][0]["score"] == 16.0
