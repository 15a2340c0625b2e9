"""The distance matrix (pairs and offsets) through the real server, against qdrant-client's
local mode (the oracle).

Random vectors (Cosine, Dot, Euclid, Manhattan; named and unnamed; some points without some
vectors; integer and UUID ids) go into a Quiver collection over HTTP (every response checked
against Qdrant's OpenAPI schema) and into ``QdrantClient(":memory:")``. Sampling is random in
both, so results are compared exactly when the sample covers every matching point (sample >=
count): same ids in id order, and per sample the same neighbours and scores (tie-aware).
A smaller sample is checked for structure: the ids match the filter, each row's neighbours are
the best others within the sample.
"""

from __future__ import annotations

import random
import uuid
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking

DISTANCES = {"cos": models.Distance.COSINE, "dot": models.Distance.DOT,
             "l2": models.Distance.EUCLID, "l1": models.Distance.MANHATTAN}
DIMS = {"cos": 6, "dot": 5, "l2": 4, "l1": 3}


def _rows(pairs: list[Any], ids: list[Any]) -> list[list[Any]]:
    """Pairs grouped by their sample `a`, in the order of `ids`."""
    out: dict[Any, list[Any]] = {i: [] for i in ids}
    for p in pairs:
        out[p.a].append(SimpleNamespace(id=p.b, score=p.score))
    return [out[i] for i in ids]


def _offset_rows(resp: Any) -> list[list[Any]]:
    out: list[list[Any]] = [[] for _ in resp.ids]
    for r, c, s in zip(resp.offsets_row, resp.offsets_col, resp.scores, strict=True):
        out[r].append(SimpleNamespace(id=resp.ids[c], score=s))
    return out


def _setup(remote: Any, local: Any, name: str, named: bool, rng: random.Random,
           n: int) -> list[Any]:
    if named:
        cfg: Any = {k: models.VectorParams(size=DIMS[k], distance=d) for k, d in DISTANCES.items()}
    else:
        cfg = models.VectorParams(size=5, distance=models.Distance.DOT)
    for client in (remote, local):
        if client.collection_exists(name):
            client.delete_collection(name)
        client.create_collection(name, vectors_config=cfg)
    ids: list[Any] = [i if i % 5 else str(uuid.UUID(int=rng.getrandbits(128))) for i in range(n)]
    points = []
    for i, pid in enumerate(ids):
        if named:
            vec: Any = {k: [round(rng.uniform(-1, 1), 3) for _ in range(DIMS[k])]
                        for k in DISTANCES if rng.random() < 0.8}
        else:
            vec = [round(rng.uniform(-1, 1), 3) for _ in range(5)]
        points.append(models.PointStruct(id=pid, vector=vec, payload={"g": i % 3}))
    for client in (remote, local):
        client.upsert(name, points, wait=True)
    return ids


FILTERS = [None, models.Filter(must=[models.FieldCondition(key="g", match=models.MatchValue(value=1))]),
           models.Filter(must_not=[models.FieldCondition(key="g", match=models.MatchValue(value=1))])]


@pytest.mark.parametrize("named", [True, False])
def test_matrix_congruence(server: Any, collection_name: str, named: bool) -> None:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    rng = random.Random(f"matrix-{named}")  # a str seed: hash() differs per process
    _setup(remote, local, collection_name, named, rng, 90)
    usings = list(DISTANCES) if named else [None]
    for using in usings:
        for flt in FILTERS:
            for limit in (1, 3, 200):
                kw: dict[str, Any] = {"query_filter": flt, "limit": limit, "sample": 200, "using": using}
                got = remote.search_matrix_offsets(collection_name, **kw)
                want = local.search_matrix_offsets(collection_name, **kw)
                assert got.ids == want.ids and len(got.ids) > 2
                for g, w in zip(_offset_rows(got), _offset_rows(want), strict=True):
                    assert_same_ranking(g, w)
                got_p = remote.search_matrix_pairs(collection_name, **kw)
                want_p = local.search_matrix_pairs(collection_name, **kw)
                assert [p.a for p in got_p.pairs] == [p.a for p in want_p.pairs]
                for g, w in zip(_rows(got_p.pairs, got.ids), _rows(want_p.pairs, want.ids),
                                strict=True):
                    assert_same_ranking(g, w)
    assert remote.contract_failures == []


def test_matrix_sample_smaller_than_count(server: Any, collection_name: str) -> None:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    rng = random.Random("matrix-small")
    ids = _setup(remote, local, collection_name, True, rng, 120)
    everything = local.search_matrix_offsets(collection_name, sample=1000, limit=1000, using="l2")
    full = {i: {r.id: r.score for r in row} for i, row in
            zip(everything.ids, _offset_rows(everything), strict=True)}
    flt = FILTERS[1]
    matching = {p.id for p in local.scroll(collection_name, flt, limit=1000)[0]}
    for _ in range(3):
        got = remote.search_matrix_offsets(collection_name, query_filter=flt, sample=12, limit=4,
                                           using="l2")
        assert len(got.ids) == 12 and len(set(got.ids)) == 12 and set(got.ids) <= matching
        order = sorted(got.ids, key=lambda x: ("", x) if isinstance(x, int) else (x, 0))
        assert got.ids == order
        for pid, row in zip(got.ids, _offset_rows(got), strict=True):
            others = sorted(((full[pid][o], o) for o in got.ids if o != pid), key=lambda e: e[0])
            want = [SimpleNamespace(id=o, score=s) for s, o in others[:4]]
            assert_same_ranking(row, want)
    assert len(ids) == 120


def test_matrix_bad_input(http: httpx.Client, collection_name: str) -> None:
    base = f"/collections/{collection_name}"
    http.delete(base)
    assert http.put(base, json={"vectors": {"a": {"size": 2, "distance": "Dot"}},
                                "sparse_vectors": {"s": {}}}).status_code == 200
    for path in ("pairs", "offsets"):
        url = f"{base}/points/search/matrix/{path}"
        empty = http.post(url, json={"using": "a"})  # fewer than 2 points: an empty matrix
        assert empty.status_code == 200
        assert empty.json()["result"] == ({"pairs": []} if path == "pairs" else
                                          {"offsets_row": [], "offsets_col": [], "scores": [],
                                           "ids": []})
        r = http.post(url, json={"using": "nope"})
        assert r.status_code == 400
        assert r.json()["status"]["error"] == "Wrong input: Not existing vector name error: nope"
        assert http.post(url, json={}).status_code == 400  # no default vector in this collection
        for body in ({"sample": 1}, {"sample": 0}, {"sample": "x"}, {"limit": 0},
                     {"limit": -2}, {"limit": True}, {"using": 3}, {"using": "s"},
                     {"using": "a", "filter": {"must": [{"key": "g", "bogus": 1}]}}):
            r = http.post(url, json=body)
            assert r.status_code == 400, (body, r.text)
            assert "error" in r.json()["status"]
        assert http.post(f"/collections/nope_matrix/points/search/matrix/{path}",
                         json={}).status_code == 404


def test_matrix_numpy_reference(http: httpx.Client, collection_name: str) -> None:
    """All of a collection's points against a brute-force numpy reference (float64)."""
    base = f"/collections/{collection_name}"
    http.delete(base)
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((40, 8)).astype(np.float32)
    assert http.put(base, json={"vectors": {"size": 8, "distance": "Euclid"}}).status_code == 200
    pts = [{"id": i, "vector": v} for i, v in enumerate(vecs.tolist())]
    assert http.put(f"{base}/points?wait=true", json={"points": pts}).status_code == 200
    r = http.post(f"{base}/points/search/matrix/pairs", json={"sample": 40, "limit": 5})
    got = r.json()["result"]["pairs"]
    d = np.sqrt(((vecs[:, None, :].astype(np.float64) - vecs[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    for a in range(40):
        row = [p for p in got if p["a"] == a]
        want = np.argsort(d[a], kind="stable")[:5]
        assert [p["b"] for p in row] == want.tolist()
        assert [p["score"] for p in row] == pytest.approx(d[a][want].tolist(), rel=1e-4)
