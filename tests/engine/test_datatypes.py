"""`datatype: float16 | uint8` through the real server: half/quarter-size storage, float32
scoring of what was stored, and honest conversion (saturating, never wrapping)."""

from __future__ import annotations

import httpx
import numpy as np


def _query(http: httpx.Client, name: str, q: list[float]) -> list[dict]:
    r = http.post(f"/collections/{name}/points/query",
                  json={"query": q, "limit": 3, "with_vector": True})
    assert r.status_code == 200, r.text
    return r.json()["result"]["points"]


def test_float16_stores_half_precision_and_scores_in_float32(server) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 16)).astype(np.float32)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        body = {"vectors": {"size": 16, "distance": "Dot", "datatype": "float16"}}
        assert http.put("/collections/f16", json=body).status_code == 200
        cfg = http.get("/collections/f16").json()["result"]["config"]["params"]["vectors"]
        assert cfg["datatype"] == "float16"
        pts = [{"id": i, "vector": v.tolist()} for i, v in enumerate(x)]
        assert http.put("/collections/f16/points?wait=true", json={"points": pts}).status_code == 200
        q = rng.standard_normal(16).astype(np.float32)
        hits = _query(http, "f16", q.tolist())
        stored = x.astype(np.float16).astype(np.float64)
        want = np.argsort(-(stored @ q.astype(np.float64)))[:3]
        assert [h["id"] for h in hits] == want.tolist()
        for h in hits:
            np.testing.assert_array_equal(np.array(h["vector"], np.float16), stored[h["id"]])
            assert abs(h["score"] - stored[h["id"]] @ q) < 1e-4


def test_uint8_saturates_and_truncates(server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        body = {"vectors": {"size": 4, "distance": "Euclid", "datatype": "uint8"}}
        assert http.put("/collections/u8", json=body).status_code == 200
        pts = [{"id": 1, "vector": [300, -1, 7.9, 3]}, {"id": 2, "vector": [0, 0, 0, 0]}]
        assert http.put("/collections/u8/points?wait=true", json={"points": pts}).status_code == 200
        got = http.get("/collections/u8/points/1").json()["result"]["vector"]
        assert got == [255, 0, 7, 3]
        hits = _query(http, "u8", [255, 0, 7, 3])
        assert hits[0]["id"] == 1 and hits[0]["score"] == 0.0


def test_uint8_with_cosine_is_refused(server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        body = {"vectors": {"size": 4, "distance": "Cosine", "datatype": "uint8"}}
        r = http.put("/collections/u8cos", json=body)
        assert r.status_code == 400 and "uint8" in r.json()["status"]["error"]
        assert http.get("/collections/u8cos").status_code == 404
