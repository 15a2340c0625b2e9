"""Sparse vectors through the real server, against qdrant-client's local mode (the oracle).

Random sparse data (with and without the IDF modifier) next to a dense vector goes into a
Quiver collection over HTTP (every response checked against Qdrant's OpenAPI schema) and into
``QdrantClient(":memory:")``; nearest queries (query API and legacy search), filters,
thresholds, offsets, `has_vector`, deletes and vector updates must give the same ids, order
and scores. Documented cases:

* Qdrant's server stores a sparse vector sorted by index and returns it so; local mode keeps
  the order it was given. Quiver follows the server: the oracle's vectors are compared sorted.
* A point sharing no index with the query is not a result (both); an overlap whose products
  are zero scores 0 and is one.
* IDF: local mode counts live points only (the server's global scope may keep counting
  deleted points until its index is rebuilt); Quiver counts live points, as local mode.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking, paired


def _sparse(rng: random.Random, vocab: int = 60) -> models.SparseVector:
    idx = rng.sample(range(vocab), rng.randint(1, 8))  # unsorted on purpose
    return models.SparseVector(indices=idx, values=[round(rng.uniform(-0.5, 2), 4) for _ in idx])


def _points(rng: random.Random, ids: range) -> list[models.PointStruct]:
    out = []
    for i in ids:
        vec: dict[str, Any] = {}
        if rng.random() < 0.85:
            vec["s"] = _sparse(rng)
        if rng.random() < 0.5:
            vec["t"] = _sparse(rng, 20)
        if rng.random() < 0.7:
            vec["d"] = [rng.uniform(-1, 1) for _ in range(4)]
        out.append(models.PointStruct(id=i, vector=vec, payload={"g": i % 4, "x": i / 7}))
    return out


def _plain(v: Any) -> Any:
    """Quiver's vectors as plain data, sparse ones in the order the server sent them."""
    if isinstance(v, models.SparseVector):
        return {"indices": list(v.indices), "values": list(v.values)}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _sorted(v: Any) -> Any:
    if isinstance(v, models.SparseVector):
        pairs = sorted(zip(v.indices, v.values, strict=True))
        return {"indices": [i for i, _ in pairs], "values": [pytest.approx(x) for _, x in pairs]}
    if isinstance(v, dict):
        return {k: _sorted(x) for k, x in v.items()}
    return pytest.approx(v) if isinstance(v, list) else v


@pytest.mark.parametrize("modifier", [models.Modifier.IDF, None])
def test_sparse_congruence(server: Any, collection_name: str, modifier: Any) -> None:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    cfg = {"vectors_config": {"d": models.VectorParams(size=4, distance=models.Distance.COSINE)},
           "sparse_vectors_config": {"s": models.SparseVectorParams(modifier=modifier),
                                     "t": models.SparseVectorParams()}}
    rng = random.Random(f"sparse-{modifier}")  # a str seed: hash() differs per process
    for client in (remote, local):
        if client.collection_exists(collection_name):
            client.delete_collection(collection_name)
        client.create_collection(collection_name, **cfg)
    info = remote.get_collection(collection_name)
    assert info.config.params.sparse_vectors == cfg["sparse_vectors_config"]
    points = _points(rng, range(400))
    for client in (remote, local):
        client.upsert(collection_name, points[:250])
        client.upsert(collection_name, points[250:])  # list form; batch form below
        client.upsert(collection_name, models.Batch(
            ids=[1000, 1001], vectors={"s": [models.SparseVector(indices=[3, 1], values=[1, 2]),
                                             models.SparseVector(indices=[], values=[])]}))
        client.delete(collection_name, list(range(0, 400, 9)))
        client.delete_vectors(collection_name, ["s"], [i for i in range(1, 60, 5) if i % 9])
        client.update_vectors(collection_name, [
            models.PointVectors(id=i, vector={"s": _sparse(random.Random(i))})
            for i in range(2, 80, 7) if i % 9])

    def both(**kw: Any) -> None:
        got = remote.query_points(collection_name, **kw).points
        want = local.query_points(collection_name, **kw).points
        assert_same_ranking(got, want, offset=kw.get("offset") or 0)
        for g, w in paired(got, want):
            assert g.payload == w.payload
            if kw.get("with_vectors"):
                assert _plain(g.vector) == _sorted(w.vector)

    qrng = random.Random(5)
    for case in range(30):
        q = _sparse(qrng)
        flt = None
        if case % 3 == 1:
            flt = models.Filter(must=[models.FieldCondition(key="g", match=models.MatchAny(
                any=[0, 2]))])
        elif case % 3 == 2:
            flt = models.Filter(must=[models.HasVectorCondition(has_vector="d")])
        both(query=q, using="s", limit=qrng.choice([1, 5, 20]), query_filter=flt,
             with_payload=True, with_vectors=case % 4 == 0, offset=case % 2 * 3)
        full = local.query_points(collection_name, query=q, using="s", limit=50).points
        if len(full) > 3:  # a threshold in the middle of a gap between two scores
            mid = (full[2].score + full[3].score) / 2
            both(query=q, using="s", limit=50, score_threshold=mid)
    both(query=_sparse(qrng, 20), using="t", limit=10)
    for pid in (2, 16, 23):  # a point's own sparse vector as the query (it is excluded)
        both(query=pid, using="s", limit=10)
    both(query=[0.1, 0.2, -0.3, 0.4], using="d", limit=10)
    for name in ("s", "t", "d"):
        flt = models.Filter(must=[models.HasVectorCondition(has_vector=name)])
        assert remote.count(collection_name, count_filter=flt).count == \
            local.count(collection_name, count_filter=flt).count
    got = remote.retrieve(collection_name, [1000, 1001, 3, 6], with_vectors=True)
    want = local.retrieve(collection_name, [1000, 1001, 3, 6], with_vectors=True)
    assert [_plain(p.vector) for p in got] == [_sorted(p.vector) for p in want]
    # legacy search, the named sparse form
    q = _sparse(qrng)
    body = {"vector": {"name": "s", "vector": q.model_dump()}, "limit": 10}
    r = httpx.post(f"{server.url}/collections/{collection_name}/points/search", json=body)
    assert r.status_code == 200, r.text
    want = local.query_points(collection_name, query=q, using="s", limit=10).points
    assert_same_ranking([models.ScoredPoint.model_validate(h) for h in r.json()["result"]], want)
    remote.contract.assert_ok()


BAD_POINTS = [
    {"s": {"indices": [1, 1], "values": [1, 2]}},  # duplicate index
    {"s": {"indices": [1, 2], "values": [1]}},  # lengths differ
    {"s": {"indices": [-1], "values": [1]}},
    {"s": {"indices": [4294967296], "values": [1]}},
    {"s": {"indices": [1], "values": [1e39]}},  # not a float32
    {"s": {"indices": [1], "values": [None]}},
    {"s": {"indices": [1], "values": ["1"]}},
    {"s": {"indices": [1]}},
    {"nope": {"indices": [1], "values": [1]}},  # unknown name
    {"d": {"indices": [1], "values": [1]}},  # sparse for a dense vector
    {"s": [1.0, 2.0, 3.0, 4.0]},  # dense for a sparse vector
    {"indices": [1], "values": [1]},  # unnamed
]


def test_sparse_bad_input(http: httpx.Client, collection_name: str) -> None:
    base = f"/collections/{collection_name}"
    http.delete(base)
    for sparse in ({"s": {"index": {"datatype": "float16"}}}, {"s": {"modifier": "bm25"}},
                   {"s": {"index": {"datatype": "uint8"}}}):
        r = http.put(base, json={"sparse_vectors": sparse})
        assert r.status_code == 400, r.text
        assert r.json()["status"]["error"]
    assert http.put(base, json={"vectors": {"d": {"size": 4, "distance": "Dot"}},
                                "sparse_vectors": {"s": {"modifier": "idf"}}}).status_code == 200
    good = {"id": 1, "vector": {"s": {"indices": [1], "values": [1.0]}}}
    for vec in BAD_POINTS:
        for body in ({"points": [good, {"id": 2, "vector": vec}]},
                     {"batch": {"ids": [2], "vectors": {k: [v] for k, v in vec.items()}}}):
            r = http.put(f"{base}/points?wait=true", json=body)
            assert r.status_code == 400, (vec, r.text)
            assert r.json()["status"]["error"]
        r = http.put(f"{base}/points/vectors?wait=true", json={"points": [{"id": 1,
                                                                         "vector": vec}]})
        assert r.status_code in (400, 404), (vec, r.text)
    r = http.post(f"{base}/points/count", json={"exact": True})
    assert r.json()["result"]["count"] == 0  # nothing stored
    assert http.put(f"{base}/points?wait=true", json={"points": [good]}).status_code == 200
    for query, using in (({"indices": [1, 1], "values": [1, 1]}, "s"),
                         ({"indices": [1], "values": [1]}, "d"), ([1, 2, 3, 4], "s"),
                         ({"indices": [1], "values": [1]}, "nope")):
        r = http.post(f"{base}/points/query", json={"query": query, "using": using})
        assert r.status_code == 400, (query, using, r.text)
    r = http.post(f"{base}/points/query", json={"query": {"indices": [1], "values": [2]},
                                                "using": "s", "with_vector": True})
    assert r.status_code == 200
    assert r.json()["result"]["points"][0]["vector"] == {"s": {"indices": [1], "values": [1.0]}}
