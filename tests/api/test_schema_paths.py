"""Every operation of Qdrant's REST schema is answered: served, or refused with a 400 naming it;
never 404 "no such endpoint" (which reads like a wrong URL) and never 405."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from api.qdrant_paths import OPERATIONS, qdrant_operation

SCHEMA = Path(__file__).parents[1] / "data" / "qdrant-openapi-v1.19.json"
METHODS = ("get", "post", "put", "delete", "patch")


def _schema_operations() -> list[tuple[str, str]]:
    paths = json.loads(SCHEMA.read_text())["paths"]
    return [(m.upper(), p) for p, ops in paths.items() for m in ops if m in METHODS]


def test_table_matches_the_schema() -> None:
    assert sorted(OPERATIONS) == sorted(_schema_operations())


def test_templates_match_paths_only() -> None:
    assert qdrant_operation("GET", "/collections/a/shards") == "/collections/{collection_name}/shards"
    assert qdrant_operation("GET", "/collections/a/b/shards") is None
    assert qdrant_operation("POST", "/collections/a/shards") is None  # PUT and GET only
    assert qdrant_operation("GET", "/no/such/thing") is None


def _fill(template: str, coll: str) -> str:
    return re.sub(r"\{[^/]+?\}", lambda m: {"{collection_name}": coll, "{id}": "1",
                                            "{shard_id}": "0", "{peer_id}": "7"}.get(
        m.group(0), "x"), template)


def test_every_schema_operation_is_answered(http: httpx.Client, collection_name: str) -> None:
    """DELETE last, so that the collection exists for every other operation."""
    http.delete(f"/collections/{collection_name}")
    assert http.put(f"/collections/{collection_name}", json={
        "vectors": {"size": 4, "distance": "Dot"}}).status_code == 200
    ops = sorted(_schema_operations(), key=lambda o: o[0] == "DELETE")
    refused = []
    for method, template in ops:
        path = _fill(template, collection_name)
        body = None if method in ("GET", "DELETE") else {}
        r = http.request(method, path, json=body)
        assert r.status_code != 405, (method, path, r.text)
        if r.status_code == 404:
            assert "no such endpoint" not in r.text, (method, path, r.text)
        if r.status_code == 400 and template in r.text:
            refused.append(f"{method} {template}")
    print("refused:", refused)  # README: API coverage lists them
    assert all(not op.startswith(("GET /cluster ", "GET /issues")) for op in refused), refused
    r = http.post("/cluster/recover", json={})
    assert r.status_code == 400
    assert r.json()["status"]["error"] == \
        "Bad request: POST /cluster/recover: Quiver runs as a single node: distributed mode " \
        "is disabled"


def test_cluster_and_issues(http: httpx.Client, collection_name: str) -> None:
    http.delete(f"/collections/{collection_name}")
    http.put(f"/collections/{collection_name}", json={"vectors": {"size": 2, "distance": "Dot"}})
    http.put(f"/collections/{collection_name}/points?wait=true", json={"points": [
        {"id": i, "vector": [1.0, float(i)]} for i in range(3)]})
    assert http.get("/cluster").json()["result"] == {"status": "disabled"}
    info = http.get(f"/collections/{collection_name}/cluster").json()["result"]
    assert info["shard_count"] == 1 and info["remote_shards"] == []
    assert info["local_shards"] == [{"shard_id": 0, "points_count": 3, "state": "Active"}]
    assert http.get("/collections/nope/cluster").status_code == 404
    assert http.get("/issues").json()["result"] == {"issues": []}
    assert http.delete("/issues").json()["result"] is True


@pytest.mark.parametrize("path", ["/no/such/thing", "/collections/a/b/c/d/e"])
def test_unknown_paths_still_404(http: httpx.Client, path: str) -> None:
    r = http.get(path)
    assert r.status_code == 404
    assert "no such endpoint" in r.json()["status"]["error"]
