"""Recommend, discover and context queries through the real server, against qdrant-client's
local mode: the universal query API (also inside a prefetch, with lookup_from) and the legacy
endpoints (/points/recommend[/batch], /points/discover[/batch]; qdrant-client 1.20 has no
recommend(), so those go through httpx). Random data; ids, order and scores must agree.

Written-down semantics (local mode; Quiver follows it):
* point ids given as examples are excluded from the results, unless looked up in another
  collection (lookup_from);
* best_score / sum_scores / discover / context scores are reported as computed (higher is
  better for every distance); score_threshold keeps scores strictly above it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking

N, DIM = 300, 8
DISTANCES = ["Cosine", "Dot", "Euclid", "Manhattan"]
OTHER = "reco_other"


def _name(dist: str) -> str:
    return f"reco_{dist.lower()}"


@pytest.fixture(scope="module")
def clients(server: Any) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    nrng = np.random.default_rng(7)
    pts = [models.PointStruct(id=i, vector=nrng.standard_normal(DIM).tolist(),
                              payload={"i": i % 10}) for i in range(N)]
    other = [models.PointStruct(id=1000 + i, vector=nrng.standard_normal(DIM).tolist())
             for i in range(10)]
    for c in (remote, local):
        for dist in DISTANCES:
            name = _name(dist)
            if c.collection_exists(name):
                c.delete_collection(name)
            c.create_collection(name, vectors_config=models.VectorParams(
                size=DIM, distance=models.Distance(dist)))
            c.upsert(name, pts[: N // 2], wait=True)  # two upserts: possibly two segments
            c.upsert(name, pts[N // 2:], wait=True)
        if c.collection_exists(OTHER):
            c.delete_collection(OTHER)
        c.create_collection(OTHER, vectors_config=models.VectorParams(
            size=DIM, distance=models.Distance.COSINE))
        c.upsert(OTHER, other, wait=True)
    yield remote, local
    remote.close()
    local.close()


def _vec(rng: np.random.Generator) -> list[float]:
    return rng.standard_normal(DIM).tolist()


FLT = models.Filter(must=[models.FieldCondition(key="i", range=models.Range(gte=3))])


def _cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    R, S = models.RecommendInput, models.RecommendStrategy
    pair = models.ContextPair
    return [
        {"query": models.RecommendQuery(recommend=R(positive=[1, 2, 3, 4, 5], negative=[6, 7]))},
        {"query": models.RecommendQuery(recommend=R(positive=[_vec(rng), _vec(rng)]))},
        {"query": models.RecommendQuery(recommend=R(
            positive=[10, _vec(rng)], negative=[11], strategy=S.AVERAGE_VECTOR)),
         "query_filter": FLT, "offset": 3},
        {"query": models.RecommendQuery(recommend=R(
            positive=[1, 2, _vec(rng)], negative=[6, _vec(rng)], strategy=S.BEST_SCORE))},
        {"query": models.RecommendQuery(recommend=R(negative=[6, 9], strategy=S.BEST_SCORE))},
        {"query": models.RecommendQuery(recommend=R(positive=[4, 8], strategy=S.BEST_SCORE)),
         "query_filter": FLT, "offset": 2, "limit": 7},
        {"query": models.RecommendQuery(recommend=R(
            positive=[1, _vec(rng)], negative=[20, 21], strategy=S.SUM_SCORES))},
        {"query": models.RecommendQuery(recommend=R(positive=[30, 31], strategy=S.SUM_SCORES))},
        {"query": models.RecommendQuery(recommend=R(negative=[_vec(rng)], strategy=S.SUM_SCORES)),
         "query_filter": FLT},
        {"query": models.DiscoverQuery(discover=models.DiscoverInput(
            target=40, context=[pair(positive=41, negative=42),
                                pair(positive=_vec(rng), negative=43)]))},
        {"query": models.DiscoverQuery(discover=models.DiscoverInput(
            target=_vec(rng), context=[pair(positive=1, negative=2)])),
         "query_filter": FLT, "offset": 1},
        {"query": models.ContextQuery(context=[pair(positive=50, negative=51),
                                               pair(positive=52, negative=_vec(rng)),
                                               pair(positive=_vec(rng), negative=53)])},
        {"query": models.RecommendQuery(recommend=R(
            positive=[1001, 1002], negative=[1003], strategy=S.BEST_SCORE)),
         "lookup_from": models.LookupLocation(collection=OTHER)},
        {"query": models.RecommendQuery(recommend=R(positive=[1004, 1005], negative=[1006])),
         "lookup_from": models.LookupLocation(collection=OTHER)},
        {"query": models.DiscoverQuery(discover=models.DiscoverInput(
            target=1007, context=[pair(positive=1008, negative=1009)])),
         "lookup_from": models.LookupLocation(collection=OTHER)},
        # inside a prefetch, fused with a plain nearest search
        {"prefetch": [models.Prefetch(query=models.RecommendQuery(recommend=R(
            positive=[1, 2], negative=[3], strategy=S.BEST_SCORE)), limit=20),
                      models.Prefetch(query=models.DiscoverQuery(discover=models.DiscoverInput(
                          target=7, context=[pair(positive=5, negative=6)])), limit=20),
                      models.Prefetch(query=_vec(rng), limit=20)],
         "query": models.FusionQuery(fusion=models.Fusion.RRF)},
        # example ids at two levels: excluded at both
        {"prefetch": [models.Prefetch(query=models.RecommendQuery(recommend=R(
            positive=[1, 2])), limit=40)],
         "query": models.RecommendQuery(recommend=R(
             positive=[1, 2], negative=[3], strategy=S.BEST_SCORE)), "limit": 15},
        # re-scoring a prefetch's candidates
        {"prefetch": [models.Prefetch(query=_vec(rng), limit=60)],
         "query": models.RecommendQuery(recommend=R(
             positive=[_vec(rng)], negative=[_vec(rng)], strategy=S.SUM_SCORES)), "limit": 15},
    ]


@pytest.mark.parametrize("dist", DISTANCES)
def test_query_api_matches_local_mode(clients: tuple[QdrantClient, QdrantClient],
                                      dist: str) -> None:
    remote, local = clients
    name = _name(dist)
    for n, kw in enumerate(_cases(np.random.default_rng(3))):
        kw = {"limit": 10, "with_payload": True, **kw}
        got = remote.query_points(name, **kw).points
        want = local.query_points(name, **kw).points
        assert want, (n, kw)
        try:
            assert_same_ranking(got, want, offset=kw.get("offset") or 0)
        except AssertionError as exc:
            raise AssertionError(f"case {n}: {[(p.id, p.score) for p in got]} != "
                                 f"{[(p.id, p.score) for p in want]}") from exc
        assert [p.payload for p in got] == [p.payload for p in want] or len(
            {p.score for p in want}) < len(want), n


# Euclid and Manhattan: only average_vector (a nearest search, distances). With a custom
# objective local mode still compares the threshold as a distance (it keeps scores below it);
# Quiver keeps scores above it for every distance, as the objective is higher-is-better.
@pytest.mark.parametrize(("dist", "strategy"), [
    *((d, s) for d in ("Cosine", "Dot")
      for s in ("average_vector", "best_score", "sum_scores", "context")),
    ("Euclid", "average_vector"), ("Manhattan", "average_vector")])
def test_score_threshold_matches_local_mode(clients: tuple[QdrantClient, QdrantClient],
                                            dist: str, strategy: str) -> None:
    remote, local = clients
    name = _name(dist)
    if strategy == "context":
        query: Any = models.ContextQuery(context=[  # many pairs: few points score 0 (ties)
            models.ContextPair(positive=i, negative=i + 1) for i in range(1, 16, 2)])
    else:
        query = models.RecommendQuery(recommend=models.RecommendInput(
            positive=[1, 2], negative=[3], strategy=models.RecommendStrategy(strategy)))
    full = local.query_points(name, query=query, limit=20).points
    scores = sorted({p.score for p in full}, reverse=True)
    assert len(scores) > 6
    threshold = (scores[5] + scores[6]) / 2  # between two distinct scores: no float edge
    if dist in ("Euclid", "Manhattan"):
        threshold = (full[5].score + full[6].score) / 2  # distances: lower is better
    got = remote.query_points(name, query=query, limit=20, score_threshold=threshold).points
    want = local.query_points(name, query=query, limit=20, score_threshold=threshold).points
    assert want
    assert_same_ranking(got, want)


def _scored(raw: list[dict[str, Any]]) -> list[models.ScoredPoint]:
    return [models.ScoredPoint(**p) for p in raw]


def test_legacy_endpoints_match_local_mode(server: Any,
                                           clients: tuple[QdrantClient, QdrantClient]) -> None:
    _, local = clients
    name = _name("Cosine")
    flt = {"must": [{"key": "i", "range": {"gte": 3}}]}
    rng = np.random.default_rng(5)
    v = _vec(rng)
    reco = [
        {"positive": [1, 2, 3], "negative": [4], "limit": 10},
        {"positive": [1, v], "negative": [4], "strategy": "best_score", "limit": 5,
         "offset": 2, "filter": flt, "with_payload": True},
        {"negative": [5, 6], "strategy": "best_score", "limit": 8},
        {"positive": [7], "negative": [8], "strategy": "sum_scores", "limit": 10},
        {"positive": [1001], "negative": [1002], "strategy": "best_score", "limit": 6,
         "lookup_from": {"collection": OTHER}},
    ]
    disc = [
        {"target": 10, "context": [{"positive": 11, "negative": 12}], "limit": 10},
        {"target": v, "context": [{"positive": 11, "negative": 12},
                                  {"positive": 13, "negative": 14}], "limit": 7,
         "filter": flt, "offset": 1},
        {"context": [{"positive": 15, "negative": 16}], "limit": 10},  # no target: context
    ]

    def oracle(body: dict[str, Any], kind: str) -> list[models.ScoredPoint]:
        lookup = body.get("lookup_from")
        if kind == "recommend":
            query: Any = models.RecommendQuery(recommend=models.RecommendInput(
                positive=body.get("positive"), negative=body.get("negative"),
                strategy=body.get("strategy")))
        elif "target" in body:
            query = models.DiscoverQuery(discover=models.DiscoverInput(
                target=body["target"], context=[models.ContextPair(**p)
                                                for p in body["context"]]))
        else:
            query = models.ContextQuery(context=[models.ContextPair(**p)
                                                 for p in body["context"]])
        return local.query_points(
            name, query=query, limit=body["limit"], offset=body.get("offset"),
            query_filter=models.Filter(**body["filter"]) if "filter" in body else None,
            with_payload=body.get("with_payload", False),
            lookup_from=models.LookupLocation(**lookup) if lookup else None).points

    base = f"/collections/{name}/points"
    with httpx.Client(base_url=server.url, timeout=30) as h:
        for kind, bodies in (("recommend", reco), ("discover", disc)):
            for body in bodies:
                r = h.post(f"{base}/{kind}", json=body)
                assert r.status_code == 200, r.text
                got = r.json()["result"]
                want = oracle(body, kind)
                assert want
                assert_same_ranking(_scored(got), want, offset=body.get("offset") or 0)
                assert all(("payload" in p and p["payload"] is not None)
                           == bool(body.get("with_payload")) for p in got)
            r = h.post(f"{base}/{kind}/batch", json={"searches": bodies})
            assert r.status_code == 200, r.text
            batch = r.json()["result"]
            assert len(batch) == len(bodies)
            for body, got in zip(bodies, batch, strict=True):
                assert_same_ranking(_scored(got), oracle(body, kind),
                                    offset=body.get("offset") or 0)


def test_example_ids_are_excluded(clients: tuple[QdrantClient, QdrantClient]) -> None:
    remote, _ = clients
    name = _name("Dot")
    for strategy in models.RecommendStrategy:
        got = remote.query_points(name, query=models.RecommendQuery(
            recommend=models.RecommendInput(positive=[1, 2], negative=[3],
                                            strategy=strategy)), limit=N).points
        ids = {p.id for p in got}
        assert not ids & {1, 2, 3} and len(ids) == N - 3


def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"status", "time"}
    return str(body["status"]["error"])


def test_bad_input(server: Any, clients: tuple[QdrantClient, QdrantClient]) -> None:
    name = _name("Cosine")
    q = f"/collections/{name}/points/query"
    with httpx.Client(base_url=server.url, timeout=30) as h:
        count = h.post(f"/collections/{name}/points/count", json={}).json()["result"]["count"]
        assert "No point with id 99999 found" in _error(h.post(q, json={
            "query": {"recommend": {"positive": [99999]}}}), 404)
        assert "No point with id 99999 found" in _error(h.post(
            f"/collections/{name}/points/recommend", json={"positive": [1], "negative": [99999],
                                                           "limit": 3}), 404)
        assert "positive" in _error(h.post(q, json={
            "query": {"recommend": {"negative": [1]}}}), 400)
        assert "positive" in _error(h.post(
            f"/collections/{name}/points/recommend", json={"negative": [1], "limit": 3}), 400)
        assert "example" in _error(h.post(q, json={
            "query": {"recommend": {"strategy": "best_score"}}}), 400)
        assert "dimension" in _error(h.post(q, json={
            "query": {"recommend": {"positive": [[1.0, 2.0]], "strategy": "best_score"}}}), 400)
        assert "dimension" in _error(h.post(q, json={
            "query": {"discover": {"target": [1.0] * 3, "context": []}}}), 400)
        assert "strategy" in _error(h.post(q, json={
            "query": {"recommend": {"positive": [1], "strategy": "nope"}}}), 400)
        assert "context" in _error(h.post(q, json={"query": {"context": []}}), 400)
        assert "limit" in _error(h.post(
            f"/collections/{name}/points/recommend", json={"positive": [1]}), 400)
        # nothing stored, nothing changed
        assert h.post(f"/collections/{name}/points/count",
                      json={}).json()["result"]["count"] == count


def test_sparse_and_multivector_average_vector(server: Any) -> None:
    """average_vector over a sparse vector (union of indices, 2·avg(pos) − avg(neg)) and a
    multivector (positive tokens and negated negative tokens) matches local mode; the custom
    strategies, discover and context over them are refused with a 400 naming the feature."""
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    name = "reco_sparse_multi"
    rng = np.random.default_rng(11)

    def sparse() -> models.SparseVector:
        idx = sorted(rng.choice(40, int(rng.integers(2, 8)), replace=False).tolist())
        return models.SparseVector(indices=idx, values=rng.uniform(0.1, 1, len(idx)).tolist())

    def multi() -> list[list[float]]:
        return rng.standard_normal((int(rng.integers(1, 4)), 4)).tolist()

    pts = [models.PointStruct(id=i, vector={"s": sparse(), "m": multi()}) for i in range(120)]
    for c in (remote, local):
        if c.collection_exists(name):
            c.delete_collection(name)
        c.create_collection(name, vectors_config={"m": models.VectorParams(
            size=4, distance=models.Distance.COSINE, multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM))},
            sparse_vectors_config={"s": models.SparseVectorParams()})
        c.upsert(name, pts, wait=True)
    R = models.RecommendInput
    cases = [("s", R(positive=[1, 2, sparse()], negative=[3])),
             ("s", R(positive=[4])),
             ("m", R(positive=[1, multi()], negative=[5, 6])),
             ("m", R(positive=[7, 8]))]
    for using, rec in cases:
        kw = {"query": models.RecommendQuery(recommend=rec), "using": using, "limit": 10}
        want = local.query_points(name, **kw).points
        assert want
        assert_same_ranking(remote.query_points(name, **kw).points, want)
    with httpx.Client(base_url=server.url, timeout=30) as h:
        q = f"/collections/{name}/points/query"
        for using, what in (("s", "sparse"), ("m", "multivector")):
            for query in ({"recommend": {"positive": [1], "strategy": "best_score"}},
                          {"discover": {"target": 1, "context": []}},
                          {"context": [{"positive": 1, "negative": 2}]}):
                assert what in _error(h.post(q, json={"query": query, "using": using}), 400)
    remote.close()
    local.close()
