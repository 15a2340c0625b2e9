"""Geo filters through the real server, against qdrant-client's local mode (the oracle).

The same random points (geo points, arrays of them, nulls, [], malformed objects, nested
arrays of objects holding points) go into two Quiver collections, one with a `geo` payload
index on `loc` and one without, and into ``QdrantClient(":memory:")``. Random geo_radius,
geo_bounding_box (also across the antimeridian) and geo_polygon (with holes) filters, mixed
with values_count / is_empty / is_null on the same keys, must select the same ids in scroll,
count and search on all three; after payload updates too. Malformed geo conditions are a 400
with Qdrant's message and store nothing.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "engine"))
from test_geo import _condition, _payloads, _square  # noqa: E402  (shared random shapes)

N = 400


def _filters(rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(30):
        cond = _condition(rng)
        extra = rng.choice([{"is_empty": {"key": "loc"}}, {"is_null": {"key": "loc"}},
                            {"key": "loc", "values_count": {rng.choice(["lt", "gte"]):
                                                            rng.randint(0, 3)}},
                            _condition(rng)])
        out.append(rng.choice([{"must": [cond]}, {"must_not": [cond]},
                               {"should": [cond, extra]}, {"must": [cond], "must_not": [extra]}]))
    return out


def _ids(client: QdrantClient, name: str, flt: models.Filter) -> list[Any]:
    points, _ = client.scroll(name, scroll_filter=flt, limit=N + 10, with_payload=False)
    return sorted(p.id for p in points)


def test_geo_filters_match_local_mode(server: Any, collection_name: str) -> None:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    plain, indexed = collection_name, collection_name + "_geoidx"
    rng = random.Random("geo")
    payloads = _payloads(rng, N)
    points = [models.PointStruct(id=i, vector=[rng.random(), rng.random()], payload=p)
              for i, p in enumerate(payloads)]
    cfg = models.VectorParams(size=2, distance=models.Distance.DOT)
    for client, name in ((remote, plain), (remote, indexed), (local, plain)):
        if client.collection_exists(name):
            client.delete_collection(name)
        client.create_collection(name, vectors_config=cfg)
        if client is remote and name == indexed:
            client.create_payload_index(name, "loc", models.PayloadSchemaType.GEO, wait=True)
        client.upsert(name, points, wait=True)

    def check(flt_json: dict[str, Any]) -> None:
        flt = models.Filter.model_validate(flt_json)
        want = _ids(local, plain, flt)
        assert _ids(remote, plain, flt) == want, flt_json
        assert _ids(remote, indexed, flt) == want, flt_json
        assert remote.count(indexed, count_filter=flt, exact=True).count == len(want)
        hits = remote.query_points(plain, query=[1.0, 1.0], query_filter=flt, limit=N).points
        assert sorted(h.id for h in hits) == want, flt_json

    for flt_json in _filters(rng):
        check(flt_json)
    # payload changes must reach the geo column (incremental sync) on both collections
    for _ in range(40):
        pid = rng.randrange(N)
        new = _payloads(rng, 1)[0]
        for client, name in ((remote, plain), (remote, indexed), (local, plain)):
            client.overwrite_payload(name, payload=new, points=[pid], wait=True)
    for flt_json in _filters(rng)[:15]:
        check(flt_json)


@pytest.mark.parametrize("cond, message", [
    ({"geo_radius": {"center": {"lon": 0, "lat": 91}, "radius": 10}},
     "Wrong format of GeoPoint payload: expected `lat` = 91 within [-90;90] and `lon` = 0 "
     "within [-180;180]"),
    ({"geo_polygon": {"exterior": {"points": _square(0, 1)["points"][:4]}}},
     "polygon invalid, the first and the last points should be the same to form a closed line"),
    ({"geo_polygon": {"exterior": _square(0, 9),
                      "interiors": [{"points": _square(2, 3)["points"][:3]}]}},
     "polygon invalid, the size must be at least 4, got 3"),
])
def test_malformed_geo_is_400(http: httpx.Client, collection_name: str,
                              cond: dict[str, Any], message: str) -> None:
    http.delete(f"/collections/{collection_name}")
    r = http.put(f"/collections/{collection_name}",
                 json={"vectors": {"size": 2, "distance": "Dot"}})
    assert r.status_code == 200
    flt = {"must": [{"key": "loc", **cond}]}
    for path, body in (("points/scroll", {"filter": flt}), ("points/count", {"filter": flt}),
                       ("points/delete", {"filter": flt}),
                       ("points/payload", {"payload": {"a": 1}, "filter": flt})):
        r = http.post(f"/collections/{collection_name}/{path}", json=body)
        assert r.status_code == 400, (path, r.text)
        assert message in r.json()["status"]["error"], r.text
