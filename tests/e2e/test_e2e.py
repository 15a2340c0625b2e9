"""A realistic qdrant-client workflow against the real server, then a restart."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
from openapi_contract import validating_qdrant_client
from qdrant_client import models
from server import QuiverServer


def _client(srv: QuiverServer):
    return validating_qdrant_client(srv.url, timeout=30)


def test_everyday_workflow_survives_restart(fresh_server: QuiverServer) -> None:
    client = _client(fresh_server)
    rng = np.random.default_rng(7)
    n, dim = 500, 16
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    cities = ["Berlin", "London", "Paris", "Rome"]

    client.create_collection("docs", vectors_config=models.VectorParams(
        size=dim, distance=models.Distance.COSINE))
    assert client.collection_exists("docs")
    info = client.get_collection("docs")
    assert info.config.params.vectors == models.VectorParams(size=dim,
                                                             distance=models.Distance.COSINE)

    client.upload_points("docs", [
        models.PointStruct(id=i, vector=vectors[i].tolist(),
                           payload={"city": cities[i % 4], "n": i, "tags": [f"t{i % 7}"]})
        for i in range(n)
    ], batch_size=64, wait=True)
    uid = str(uuid.UUID(int=12345))
    client.upsert("docs", [models.PointStruct(id=uid, vector=vectors[0].tolist(),
                                              payload={"city": "Oslo"})], wait=True)
    assert client.count("docs").count == n + 1

    # unfiltered search: the query point itself (and its twin) come first
    hits = client.query_points("docs", query=vectors[3].tolist(), limit=5).points
    assert hits[0].id == 3 and abs(hits[0].score - 1.0) < 1e-5
    exact = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.argsort(-(exact @ exact[3]))[:5].tolist()
    assert [h.id for h in hits] == expected

    # filtered search
    berlin = models.Filter(must=[models.FieldCondition(key="city",
                                                       match=models.MatchValue(value="Berlin"))])
    hits = client.query_points("docs", query=vectors[5].tolist(), query_filter=berlin,
                               limit=10, with_payload=True).points
    assert len(hits) == 10 and all(h.payload["city"] == "Berlin" for h in hits)
    ranged = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=10,
                                                                                  lt=20))])
    assert client.count("docs", count_filter=ranged).count == 10

    # scroll through everything in pages
    seen, offset = [], None
    while True:
        page, offset = client.scroll("docs", limit=128, offset=offset)
        seen.extend(p.id for p in page)
        if offset is None:
            break
    assert seen == list(range(n)) + [uid]

    # payload updates
    client.set_payload("docs", payload={"vip": True}, points=[1, 2, 3])
    client.overwrite_payload("docs", payload={"city": "Madrid"}, points=[4])
    client.delete_payload("docs", keys=["tags"], points=[5])
    client.clear_payload("docs", points_selector=[6])
    got = {p.id: p.payload for p in client.retrieve("docs", ids=[1, 4, 5, 6])}
    assert got[1]["vip"] is True and got[4] == {"city": "Madrid"}
    assert "tags" not in got[5] and got[6] == {}

    # deletes by id and by filter
    client.delete("docs", points_selector=models.PointIdsList(points=[10, 11]))
    client.delete("docs", points_selector=models.FilterSelector(filter=models.Filter(
        must=[models.FieldCondition(key="city", match=models.MatchValue(value="Rome"))])))
    remaining = client.count("docs").count
    assert remaining == n + 1 - 2 - sum(1 for i in range(n) if i % 4 == 3 and i not in (10, 11))

    # aliases
    client.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="docs",
                                                                    alias_name="prod"))])
    assert client.count("prod").count == remaining
    assert [a.alias_name for a in client.get_aliases().aliases] == ["prod"]

    client.create_payload_index("docs", "city", models.PayloadSchemaType.KEYWORD)
    before = client.query_points("docs", query=vectors[9].tolist(), limit=7,
                                 with_payload=True, with_vectors=True).points

    # restart: everything is still there
    fresh_server.restart()
    client = _client(fresh_server)
    assert client.count("docs").count == remaining
    assert client.count("prod").count == remaining
    after = client.query_points("docs", query=vectors[9].tolist(), limit=7,
                                with_payload=True, with_vectors=True).points
    assert [(p.id, round(p.score, 5), p.payload) for p in after] == \
        [(p.id, round(p.score, 5), p.payload) for p in before]
    assert np.allclose([p.vector for p in after], [p.vector for p in before])
    assert client.get_collection("docs").payload_schema["city"].data_type == "keyword"
    assert client.retrieve("docs", ids=[4])[0].payload == {"city": "Madrid"}
    assert client.contract.failures == []


def test_named_vectors_and_legacy_search(server: QuiverServer, http) -> None:
    body = {"vectors": {"img": {"size": 3, "distance": "Dot"},
                        "txt": {"size": 2, "distance": "Euclid"}}}
    assert http.put("/collections/named", json=body).status_code == 200
    info = http.get("/collections/named").json()["result"]
    assert info["config"]["params"]["vectors"] == body["vectors"]
    pts = [{"id": 1, "vector": {"img": [1, 0, 0], "txt": [0, 0]}},
           {"id": 2, "vector": {"img": [0, 1, 0]}},
           {"id": 3, "vector": {"txt": [3, 4]}}]
    r = http.put("/collections/named/points?wait=true", json={"points": pts})
    assert r.json()["result"]["status"] == "completed"
    r = http.post("/collections/named/points/search",
                  json={"vector": {"name": "txt", "vector": [0, 0]}, "top": 5})
    assert [(p["id"], p["score"]) for p in r.json()["result"]] == [(1, 0.0), (3, 5.0)]
    r = http.post("/collections/named/points/query",
                  json={"query": [1, 1, 0], "using": "img", "with_vector": ["txt"]})
    res = r.json()["result"]["points"]
    assert [p["id"] for p in res] == [1, 2]
    assert res[0]["vector"] == {"txt": [0.0, 0.0]} and res[1]["vector"] == {}
    r = http.post("/collections/named/points/search/batch", json={"searches": [
        {"vector": {"name": "img", "vector": [0, 1, 0]}, "limit": 1},
        {"vector": {"name": "txt", "vector": [3, 4]}, "limit": 1}]})
    assert [[p["id"] for p in b] for b in r.json()["result"]] == [[2], [3]]
    r = http.post("/collections/named/points/query/batch", json={"searches": [
        {"query": {"nearest": [0, 1, 0]}, "using": "img", "limit": 1},
        {"query": 1, "using": "txt", "limit": 5}]})
    assert [[p["id"] for p in b["points"]] for b in r.json()["result"]] == [[2], [3]]


def test_service_endpoints(server: QuiverServer, http) -> None:
    root = http.get("/").json()
    assert root["title"] == "quiver - vector search engine"
    assert root["version"] == "1.19.0" and len(root["commit"]) == 40
    assert http.get("/").headers["x-quiver-version"]
    assert http.get("/healthz").text == "healthz check passed"
    assert http.get("/livez").status_code == 200
    assert http.get("/readyz").text == "all shards are ready"
    tel = http.get("/telemetry").json()["result"]
    assert tel["app"]["name"] == "quiver" and tel["quiver"]["device"].startswith("cpu")
    # double slashes and trailing slashes are normalised, as in Qdrant
    r = httpx.get(server.url + "//collections//")
    assert r.status_code == 200 and r.json()["status"] == "ok"
