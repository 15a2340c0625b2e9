"""Quantization through the real server: configs, params.quantization, rescoring against
qdrant-client local mode (exact), snapshots recovered without training."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient, models

N, DIM = 2000, 64


def _telemetry(http: httpx.Client) -> dict[str, Any]:
    return http.get("/telemetry").json()["result"]["quiver"]


def _wait_quantized(http: httpx.Client, name: str, bytes_per_row: int) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        for c in _telemetry(http)["collections"]:
            if c["id"] == name and sum(c["quantized_bytes"].values()) >= N * bytes_per_row:
                return
        time.sleep(0.1)
    raise AssertionError(f"{name} was not quantized in time")


def _load(http: httpx.Client, name: str, quant: dict[str, Any], x: np.ndarray) -> None:
    r = http.put(f"/collections/{name}", json={
        "vectors": {"size": DIM, "distance": "Euclid"}, "quantization_config": quant})
    assert r.status_code == 200, r.text
    r = http.put(f"/collections/{name}/points?wait=true", json={
        "points": [{"id": i, "vector": v} for i, v in enumerate(x.tolist())]})
    assert r.status_code == 200, r.text


def _ids(http: httpx.Client, name: str, q: np.ndarray, params: dict[str, Any]) -> list[int]:
    r = http.post(f"/collections/{name}/points/query",
                  json={"query": q.tolist(), "limit": 10, "params": params})
    assert r.status_code == 200, r.text
    return [p["id"] for p in r.json()["result"]["points"]]


def test_rescored_search_matches_local_mode(http: httpx.Client, collection_name: str) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    queries = rng.standard_normal((20, DIM)).astype(np.float32)
    _load(http, collection_name, {"scalar": {"type": "int8", "quantile": 0.99}}, x)
    _wait_quantized(http, collection_name, DIM)
    local = QdrantClient(":memory:")
    local.create_collection("l", vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.EUCLID))
    local.upsert("l", points=[models.PointStruct(id=i, vector=v) for i, v in
                              enumerate(x.tolist())])
    hits = []
    quant = {"rescore": True, "oversampling": 2.0}
    for q in queries:
        want = [p.id for p in local.query_points("l", query=q.tolist(), limit=10).points]
        got = _ids(http, collection_name, q, {"quantization": quant})
        hits.append(len(set(want) & set(got)) / 10)
        assert _ids(http, collection_name, q, {"quantization": {"ignore": True}}) == want
    assert np.mean(hits) >= 0.99
    # rescore false: approximate scores, still a ranked list of stored points
    r = http.post(f"/collections/{collection_name}/points/query", json={
        "query": queries[0].tolist(), "limit": 5, "params": {"quantization": {"rescore": False}}})
    assert r.status_code == 200 and len(r.json()["result"]["points"]) == 5
    for bad in ({"oversampling": 0.5}, {"ignore": "yes"}, {"rescore": 1}):
        r = http.post(f"/collections/{collection_name}/points/query", json={
            "query": queries[0].tolist(), "params": {"quantization": bad}})
        assert r.status_code == 400, r.text


def test_bad_configs_are_400_and_nothing_is_created(http: httpx.Client,
                                                     collection_name: str) -> None:
    for quant, word in (({"product": {"compression": "x3"}}, "compression"),
                        ({"scalar": {"type": "int8", "quantile": 0.2}}, "quantile"),
                        ({"binary": {"foo": 1}}, "foo")):
        r = http.put(f"/collections/{collection_name}", json={
            "vectors": {"size": 4, "distance": "Dot"}, "quantization_config": quant})
        assert r.status_code == 400 and word in r.json()["status"]["error"], r.text
        assert http.get(f"/collections/{collection_name}/exists").json()["result"]["exists"] \
            is False
    r = http.put(f"/collections/{collection_name}", json={"vectors": {"size": 4,
                                                                      "distance": "Dot"}})
    assert r.status_code == 200
    r = http.patch(f"/collections/{collection_name}",
                   json={"quantization_config": {"product": {"compression": "x7"}}})
    assert r.status_code == 400
    # params.quantization on a collection without quantization: accepted, ignored
    r = http.post(f"/collections/{collection_name}/points/query", json={
        "query": [1, 0, 0, 0], "params": {"quantization": {"rescore": True}}})
    assert r.status_code == 200, r.text
    http.delete(f"/collections/{collection_name}")


def test_update_requantizes_and_disabled_turns_off(http: httpx.Client,
                                                   collection_name: str) -> None:
    x = np.random.default_rng(12).standard_normal((N, DIM)).astype(np.float32)
    _load(http, collection_name, {"binary": {}}, x)
    _wait_quantized(http, collection_name, DIM // 8)
    r = http.patch(f"/collections/{collection_name}",
                   json={"quantization_config": {"scalar": {"type": "int8"}}})
    assert r.status_code == 200, r.text
    _wait_quantized(http, collection_name, DIM)
    info = http.get(f"/collections/{collection_name}").json()["result"]
    assert info["config"]["quantization_config"] == {"scalar": {"type": "int8"}}
    r = http.patch(f"/collections/{collection_name}", json={"quantization_config": "Disabled"})
    assert r.status_code == 200, r.text
    info = http.get(f"/collections/{collection_name}").json()["result"]
    assert "quantization_config" not in info["config"]
    http.delete(f"/collections/{collection_name}")


def test_snapshot_recovers_without_training(fresh_server: Any, tmp_path: Any) -> None:
    x = np.random.default_rng(13).standard_normal((N, DIM)).astype(np.float32)
    q = x[:5] + 0.01
    with httpx.Client(base_url=fresh_server.url, timeout=60) as http:
        _load(http, "src", {"product": {"compression": "x16"}}, x)
        _wait_quantized(http, "src", 16)
        before = [_ids(http, "src", v, {"quantization": {"rescore": False}}) for v in q]
        snap = http.post("/collections/src/snapshots?wait=true").json()["result"]["name"]
        trained = _telemetry(http)["quantizer_trainings"]
        path = tmp_path / "snaps" / "src.snapshot"  # recovery reads inside snapshots_path
        path.write_bytes(http.get(f"/collections/src/snapshots/{snap}").content)
        r = http.put("/collections/dst/snapshots/recover?wait=true",
                     json={"location": path.as_uri()})
        assert r.status_code == 200, r.text
        _wait_quantized(http, "dst", 16)
        assert _telemetry(http)["quantizer_trainings"] == trained  # no training call
        after = [_ids(http, "dst", v, {"quantization": {"rescore": False}}) for v in q]
        assert after == before  # the same codes and codebook answer
