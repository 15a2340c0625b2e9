"""Write-side gaps of issue 13 through the real server, against QdrantClient(":memory:"):
points without vectors (collections with optional named vectors), conditional upserts and
vector updates (update_filter, update_mode), durable across a restart."""

from __future__ import annotations

import numpy as np
from qdrant_client import QdrantClient, models
from server import QuiverServer


def _points(http, name: str) -> dict:
    r = http.post(f"/collections/{name}/points/scroll",
                  json={"limit": 1000, "with_vector": True, "with_payload": True})
    assert r.status_code == 200, r.text
    return {p["id"]: (p.get("payload"), p.get("vector")) for p in r.json()["result"]["points"]}


def _local_points(local: QdrantClient, name: str) -> dict:
    pts, _ = local.scroll(name, limit=1000, with_vectors=True, with_payload=True)
    return {p.id: (p.payload, {k: list(v) if isinstance(v, list) else v.model_dump()
                               for k, v in (p.vector or {}).items()}) for p in pts}


def _same(http, local: QdrantClient, name: str) -> None:
    mine, theirs = _points(http, name), _local_points(local, name)
    assert mine.keys() == theirs.keys()
    for pid, (payload, vec) in theirs.items():
        assert mine[pid][0] == payload
        assert mine[pid][1].keys() == vec.keys()
        for k, v in vec.items():
            if isinstance(v, list):
                assert np.allclose(mine[pid][1][k], v, atol=1e-6)
            else:  # sparse: indices equal, values as float32
                assert mine[pid][1][k]["indices"] == v["indices"]
                assert np.allclose(mine[pid][1][k]["values"], v["values"], atol=1e-6)


def _both(http, local: QdrantClient, name: str, create: dict, writes: list[dict]) -> None:
    assert http.put(f"/collections/{name}", json=create).status_code == 200
    local.create_collection(
        name,
        vectors_config={n: models.VectorParams(**p) for n, p in create["vectors"].items()},
        sparse_vectors_config={n: models.SparseVectorParams()
                               for n in create.get("sparse_vectors", {})})
    for body in writes:
        r = http.put(f"/collections/{name}/points?wait=true", json=body)
        assert r.status_code == 200, r.text
        local.upsert(name, points=models.PointsList(**body).points
                     if "points" in body else models.Batch(**body["batch"]))


def test_points_without_vectors(http, collection_name: str) -> None:
    local = QdrantClient(":memory:")
    sparse = {"indices": [3, 1], "values": [0.5, 0.25]}
    _both(http, local, collection_name + "_none", {"vectors": {}}, [
        {"points": [{"id": 1, "vector": {}, "payload": {"a": 1}}, {"id": 2, "vector": {}}]},
        {"batch": {"ids": [3, 4], "vectors": {}}},
    ])
    _same(http, local, collection_name + "_none")
    _both(http, local, collection_name + "_sparse", {"vectors": {}, "sparse_vectors": {"s": {}}},
          [{"points": [{"id": 1, "vector": {}}, {"id": 2, "vector": {"s": sparse}}]}])
    _same(http, local, collection_name + "_sparse")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 4)).tolist(), rng.standard_normal((2, 3)).tolist()
    _both(http, local, collection_name + "_named",
          {"vectors": {"a": {"size": 4, "distance": "Dot"}, "b": {"size": 3, "distance": "Cosine"}}},
          [{"points": [{"id": 1, "vector": {}}, {"id": 2, "vector": {"a": a[0]}},
                       {"id": 3, "vector": {"b": b[0]}}, {"id": 4, "vector": {"a": a[1], "b": b[1]}}]},
           {"batch": {"ids": [5, 6], "vectors": {"a": a}}}])
    _same(http, local, collection_name + "_named")
    r = http.post(f"/collections/{collection_name}_named/points/count",
                  json={"filter": {"must": [{"has_vector": "b"}]}, "exact": True})
    assert r.json()["result"]["count"] == local.count(
        collection_name + "_named", count_filter=models.Filter(
            must=[models.HasVectorCondition(has_vector="b")])).count


def _conditional_bodies(rng: np.random.Generator) -> list[tuple[str, dict]]:
    def pts(ids: list[int], tag: str) -> list[dict]:
        return [{"id": i, "vector": rng.standard_normal(4).tolist(),
                 "payload": {"g": i % 3, "tag": tag}} for i in ids]
    flt = {"must": [{"key": "g", "match": {"value": 1}}]}
    return [
        ("upsert", {"points": pts(list(range(10)), "first")}),
        ("upsert", {"points": pts(list(range(5, 15)), "filtered"), "update_filter": flt}),
        ("upsert", {"points": pts(list(range(12, 20)), "insert_only"),
                    "update_mode": "insert_only"}),
        ("upsert", {"points": pts(list(range(18, 25)), "update_only"),
                    "update_mode": "update_only"}),
        ("upsert", {"batch": {"ids": [0, 1, 2, 30], "vectors": rng.standard_normal((4, 4)).tolist(),
                              "payloads": [{"g": 1, "tag": "batch"}] * 4},
                    "update_filter": {"must": [{"key": "tag", "match": {"value": "first"}}]},
                    "update_mode": "upsert"}),
        ("vectors", {"points": [{"id": i, "vector": rng.standard_normal(4).tolist()}
                                for i in range(0, 12)], "update_filter": flt}),
    ]


def _apply_local(local: QdrantClient, name: str, kind: str, body: dict) -> None:
    flt = models.Filter(**body["update_filter"]) if "update_filter" in body else None
    if kind == "vectors":
        local.update_vectors(name, points=[models.PointVectors(**p) for p in body["points"]],
                             update_filter=flt)
        return
    pts = models.PointsList(**body).points if "points" in body else models.Batch(**body["batch"])
    local.upsert(name, points=pts, update_filter=flt,
                 update_mode=models.UpdateMode(body["update_mode"]) if "update_mode" in body
                 else None)


def test_conditional_writes_match_local_and_survive_restart(fresh_server: QuiverServer) -> None:
    import httpx
    name = "cond"
    local = QdrantClient(":memory:")
    local.create_collection(name, vectors_config=models.VectorParams(
        size=4, distance=models.Distance.EUCLID))
    with httpx.Client(base_url=fresh_server.url, timeout=30) as http:
        assert http.put(f"/collections/{name}", json={"vectors": {
            "size": 4, "distance": "Euclid"}}).status_code == 200
        for kind, body in _conditional_bodies(np.random.default_rng(11)):
            path = "/points/vectors" if kind == "vectors" else "/points"
            r = http.put(f"/collections/{name}{path}?wait=true", json=body)
            assert r.status_code == 200, r.text
            _apply_local(local, name, kind, body)
        _same_single(http, local, name)
    tags = {p.id: p.payload["tag"] for p in local.scroll(name, limit=100)[0]}
    # the scenario is not vacuous: every condition kept some points and wrote others
    assert {tags[5], tags[7]} == {"first", "filtered"} and tags[14] == "filtered"
    assert tags[12] == "filtered" and tags[16] == "insert_only" and 20 not in tags
    assert tags[18] == "update_only" and tags[0] == "batch" and tags[30] == "batch"
    fresh_server.restart(kill=True)  # WAL replay
    with httpx.Client(base_url=fresh_server.url, timeout=30) as http:
        _same_single(http, local, name)
    fresh_server.restart()  # flushed segments
    with httpx.Client(base_url=fresh_server.url, timeout=30) as http:
        _same_single(http, local, name)


def _same_single(http, local: QdrantClient, name: str) -> None:
    mine = _points(http, name)
    pts, _ = local.scroll(name, limit=1000, with_vectors=True, with_payload=True)
    assert mine.keys() == {p.id for p in pts}
    for p in pts:
        assert mine[p.id][0] == p.payload
        assert np.allclose(mine[p.id][1], p.vector, atol=1e-6)


def test_conditional_write_bad_input(http, collection_name: str) -> None:
    c = f"/collections/{collection_name}"
    assert http.put(c, json={"vectors": {"size": 2, "distance": "Dot"}}).status_code == 200
    pt = [{"id": 1, "vector": [1, 2]}]
    for body in ({"points": pt, "update_mode": "replace"},
                 {"points": pt, "update_filter": {"must": [{"nope": 1}]}},
                 {"points": pt, "update_filter": 3}):
        r = http.put(f"{c}/points?wait=true", json=body)
        assert r.status_code == 400, (body, r.text)
    assert http.post(f"{c}/points/count", json={}).json()["result"]["count"] == 0


def test_conditional_writes_sparse_and_multivectors(http, collection_name: str) -> None:
    name = collection_name
    local = QdrantClient(":memory:")
    local.create_collection(name, vectors_config={
        "d": models.VectorParams(size=2, distance=models.Distance.DOT),
        "m": models.VectorParams(size=2, distance=models.Distance.DOT,
                                 multivector_config=models.MultiVectorConfig(
                                     comparator=models.MultiVectorComparator.MAX_SIM))},
        sparse_vectors_config={"s": models.SparseVectorParams()})
    assert http.put(f"/collections/{name}", json={"vectors": {
        "d": {"size": 2, "distance": "Dot"},
        "m": {"size": 2, "distance": "Dot", "multivector_config": {"comparator": "max_sim"}}},
        "sparse_vectors": {"s": {}}}).status_code == 200
    rng = np.random.default_rng(5)

    def pts(ids: range, tag: str) -> list[dict]:
        return [{"id": i, "payload": {"tag": tag, "g": i % 2}, "vector": {
            "d": rng.standard_normal(2).tolist(),
            "m": rng.standard_normal((1 + i % 3, 2)).tolist(),
            "s": {"indices": [i, i + 7], "values": rng.standard_normal(2).tolist()}}}
            for i in ids]
    g1 = {"must": [{"key": "g", "match": {"value": 1}}]}
    writes = [
        ("upsert", {"points": pts(range(4), "a")}),
        ("upsert", {"points": pts(range(2, 6), "b"), "update_mode": "insert_only"}),
        ("upsert", {"points": pts(range(8), "c"), "update_mode": "update_only",
                    "update_filter": g1}),
        ("vectors", {"points": [{"id": i, "vector": {"s": {"indices": [9], "values": [2.0]}}}
                                for i in range(6)],
                     "update_filter": {"must": [{"key": "tag", "match": {"value": "b"}}]}}),
    ]
    for kind, body in writes:
        path = "/points/vectors" if kind == "vectors" else "/points"
        r = http.put(f"/collections/{name}{path}?wait=true", json=body)
        assert r.status_code == 200, r.text
        _apply_local(local, name, kind, body)
    _same(http, local, name)
    # the same through POST /points/batch
    body = {"points": pts(range(6), "x"), "update_filter": g1}
    r = http.post(f"/collections/{name}/points/batch?wait=true",
                  json={"operations": [{"upsert": body}]})
    assert r.status_code == 200, r.text
    _apply_local(local, name, "upsert", body)
    _same(http, local, name)
