"""Facet counts through the real server, against qdrant-client's local mode (the oracle).

Random payloads (keyword, integer, bool and uuid keys, single values and arrays with repeats,
missing keys) go into a Quiver collection over HTTP (every response checked against Qdrant's
OpenAPI schema) and into ``QdrantClient(":memory:")``; facets with and without filters,
limits, `exact` true/false, after deletes and payload updates, must give the same hits in the
same order (count descending, then value ascending). Documented differences:

* Qdrant's server needs a payload index on the key (keyword, integer, bool or uuid) and counts
  only the values that index holds; local mode needs none and counts every value. Each key
  here holds one type, so both count the same; the refusal without an index is checked
  against the server's message.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models

KEYS = {"kw": models.PayloadSchemaType.KEYWORD, "n": models.PayloadSchemaType.INTEGER,
        "b": models.PayloadSchemaType.BOOL, "u": models.PayloadSchemaType.UUID,
        "tags": models.PayloadSchemaType.KEYWORD, "meta.colour": models.PayloadSchemaType.KEYWORD}


def _payload(rng: random.Random, uuids: list[str]) -> dict[str, Any]:
    p: dict[str, Any] = {"g": rng.randrange(4)}
    if rng.random() < 0.9:
        p["kw"] = rng.choice(["alpha", "beta", "gamma", "delta", "Épée", "zeta", "b", "B"])
    if rng.random() < 0.9:
        p["n"] = (rng.randrange(-5, 6) if rng.random() < 0.7
                  else [rng.randrange(-5, 6) for _ in range(rng.randint(0, 4))])
    if rng.random() < 0.8:
        p["b"] = rng.random() < 0.3 if rng.random() < 0.8 else [True, False, True]
    if rng.random() < 0.8:
        p["u"] = rng.choice(uuids)
    if rng.random() < 0.8:  # arrays with repeated values: a point counts once per value
        p["tags"] = [rng.choice("pqrstuvw") for _ in range(rng.randint(0, 5))]
    if rng.random() < 0.7:
        p["meta"] = {"colour": rng.choice(["red", "green", "blue"])}
    return p


def _hits(resp: Any) -> list[tuple[Any, type, int]]:
    return [(h.value, type(h.value), h.count) for h in resp.hits]


def test_facet_congruence(server: Any, collection_name: str) -> None:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    rng = random.Random("facet")  # a str seed: hash() differs per process
    uuids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(7)]
    for client in (remote, local):
        if client.collection_exists(collection_name):
            client.delete_collection(collection_name)
        client.create_collection(collection_name, vectors_config=models.VectorParams(
            size=2, distance=models.Distance.DOT))
    for key, schema in KEYS.items():  # local mode needs (and wants) no index
        remote.create_payload_index(collection_name, key, schema, wait=True)
    points = [models.PointStruct(id=i, vector=[rng.random(), rng.random()],
                                 payload=_payload(rng, uuids)) for i in range(600)]
    for client in (remote, local):
        client.upsert(collection_name, points, wait=True)

    filters = [None,
               models.Filter(must=[models.FieldCondition(key="g", match=models.MatchValue(value=1))]),
               models.Filter(must_not=[models.FieldCondition(key="kw",
                                                             match=models.MatchAny(any=["beta"]))]),
               models.Filter(must=[models.FieldCondition(key="g", match=models.MatchValue(value=9))])]

    def check() -> None:
        for key in KEYS:
            for flt in filters:
                for limit in (None, 2, 100):
                    for exact in (False, True):
                        kw: dict[str, Any] = {"facet_filter": flt, "exact": exact}
                        if limit is not None:
                            kw["limit"] = limit
                        got = remote.facet(collection_name, key, **kw)
                        want = local.facet(collection_name, key, **kw)
                        assert _hits(got) == _hits(want), (key, flt, limit, exact)

    check()
    gone = set(rng.sample(range(600), 150))
    changed: list[Any] = [i for i in range(0, 600, 7) if i not in gone]
    for client in (remote, local):
        client.delete(collection_name, models.PointIdsList(points=sorted(gone)), wait=True)
        client.set_payload(collection_name, {"kw": "zeta", "tags": ["p", "p", "x"]},
                           points=changed, wait=True)
    check()
    assert remote.contract_failures == []


def test_facet_bad_input(http: httpx.Client, collection_name: str) -> None:
    base = f"/collections/{collection_name}"
    http.delete(base)
    assert http.put(base, json={"vectors": {"size": 2, "distance": "Dot"}}).status_code == 200
    # an empty collection answers before looking for the index (as Qdrant's segments do)
    r = http.post(f"{base}/facet", json={"key": "kw"})
    assert r.status_code == 200 and r.json()["result"] == {"hits": []}
    pts: list[dict[str, Any]] = [{"id": i, "vector": [1, i], "payload": {"kw": f"v{i % 3}", "f": i / 2}}
           for i in range(10)]
    assert http.put(f"{base}/points?wait=true", json={"points": pts}).status_code == 200
    bodies: list[dict[str, Any]] = [{"key": "kw"}, {"key": "f"}, {"key": "missing", "exact": True}]
    for body in bodies:
        r = http.post(f"{base}/facet", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["status"]["error"] == (
            f"Wrong input: No appropriate index for faceting: `{body['key']}`. Please create one "
            "to facet on this field. Check https://qdrant.tech/documentation/concepts/indexing/"
            "#payload-index to see which payload schemas support Match conditions")
    # a float index cannot facet; a keyword one can
    assert http.put(f"{base}/index?wait=true",
                    json={"field_name": "f", "field_schema": "float"}).status_code == 200
    assert http.post(f"{base}/facet", json={"key": "f"}).status_code == 400
    assert http.put(f"{base}/index?wait=true",
                    json={"field_name": "kw", "field_schema": "keyword"}).status_code == 200
    r = http.post(f"{base}/facet", json={"key": "kw", "limit": 2})
    assert r.status_code == 200
    tally: dict[str, int] = {}
    for p in pts:
        tally[p["payload"]["kw"]] = tally.get(p["payload"]["kw"], 0) + 1
    want = sorted(tally.items(), key=lambda e: (-e[1], e[0]))[:2]
    assert r.json()["result"]["hits"] == [{"value": v, "count": c} for v, c in want]
    for body in ({"key": "kw", "limit": 0}, {"key": "kw", "limit": -1}, {"key": "kw", "limit": "x"},
                 {}, {"key": 3}, {"key": "kw", "exact": "yes"},
                 {"key": "kw", "filter": {"must": [{"key": "kw", "bogus": 1}]}}):
        r = http.post(f"{base}/facet", json=body)
        assert r.status_code == 400, (body, r.text)
        assert "error" in r.json()["status"]
    assert http.post("/collections/nope_facet/facet", json={"key": "kw"}).status_code == 404


@pytest.mark.parametrize("schema", ["keyword", "integer", "bool", "uuid"])
def test_facet_counts_only_the_index_type(http: httpx.Client, collection_name: str,
                                          schema: str) -> None:
    """The server reads one payload index: values of other types under the key don't count."""
    base = f"/collections/{collection_name}"
    http.delete(base)
    assert http.put(base, json={"vectors": {"size": 2, "distance": "Dot"}}).status_code == 200
    u = "550e8400-e29b-41d4-a716-446655440000"
    values = ["x", 3, True, u.upper(), u, 3.0, None, [3, "x", False, 3], {"a": 1}]
    pts = [{"id": i, "vector": [1, 0], "payload": {"k": v}} for i, v in enumerate(values)]
    assert http.put(f"{base}/points?wait=true", json={"points": pts}).status_code == 200
    assert http.put(f"{base}/index?wait=true",
                    json={"field_name": "k", "field_schema": schema}).status_code == 200
    hits = http.post(f"{base}/facet", json={"key": "k"}).json()["result"]["hits"]
    counts: dict[Any, int] = {}
    for v in values:
        for x in {_index_value(schema, x) for x in (v if isinstance(v, list) else [v])} - {None}:
            counts[x] = counts.get(x, 0) + 1
    want = [{"value": x, "count": c} for x, c in sorted(counts.items(), key=lambda e: (-e[1], e[0]))]
    assert hits == want and want


def _index_value(schema: str, v: Any) -> Any:
    """What a payload index of `schema` holds for one payload value (None: nothing)."""
    if schema == "keyword":
        return v if isinstance(v, str) else None
    if schema == "integer":
        return v if isinstance(v, int) and not isinstance(v, bool) else None
    if schema == "bool":
        return v if isinstance(v, bool) else None
    try:
        return str(uuid.UUID(v)) if isinstance(v, str) else None
    except ValueError:
        return None
