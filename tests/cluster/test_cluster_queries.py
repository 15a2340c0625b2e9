"""The whole read/query API across shards: a 3-shard collection on a three-node Ray cluster
answers exactly as QdrantClient(":memory:") holding the same random points — prefetch trees
with RRF / weighted RRF / DBSF (hybrid dense + sparse), formulas, query by point id,
recommend / discover / context (ids and vectors), lookup_from, order_by, mmr, sample, batches,
groups with prefetch and with_lookup, aliases and the distance matrix. Legacy recommend /
discover answer as the query API does. What cannot be exact is a 400 naming it."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking, paired

N = 210
COLL, OTHER = "hq", "hq_lookup"
S_VALUES = ["x", "y", "z"]
DIMS = {"a": 8, "b": 6}


def _sparse(rng: np.random.Generator) -> models.SparseVector:
    idx = np.sort(rng.choice(40, size=int(rng.integers(1, 8)), replace=False))
    return models.SparseVector(indices=idx.tolist(), values=rng.random(len(idx)).round(3).tolist())


def _payload(rng: random.Random) -> dict[str, Any]:
    p: dict[str, Any] = {"i": rng.randrange(20), "s": rng.choice(S_VALUES), "g": rng.randrange(6)}
    if rng.random() < 0.9:
        p["f"] = round(rng.uniform(-5, 5), 3)
    return p


@pytest.fixture(scope="module")
def clients(cluster_server: Any) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    remote = validating_qdrant_client(cluster_server.url, timeout=120)
    local = QdrantClient(":memory:")
    rng, nrng = random.Random(16), np.random.default_rng(16)
    dense = {"a": models.VectorParams(size=8, distance=models.Distance.COSINE),
             "b": models.VectorParams(size=6, distance=models.Distance.EUCLID)}
    ids: list[Any] = list(range(N - 10)) + [str(uuid.UUID(int=rng.getrandbits(126)))
                                            for _ in range(10)]
    pts = [models.PointStruct(id=pid, payload=_payload(rng), vector={
        "a": nrng.standard_normal(8).tolist(), "b": nrng.standard_normal(6).tolist(),
        **({"s": _sparse(nrng)} if k % 7 else {})}) for k, pid in enumerate(ids)]
    other = [models.PointStruct(id=1000 + k, vector={"a": nrng.standard_normal(8).tolist(),
                                                     "b": nrng.standard_normal(6).tolist()})
             for k in range(6)]
    other += [models.PointStruct(id=g, vector={"a": nrng.standard_normal(8).tolist(),
                                               "b": nrng.standard_normal(6).tolist()},
                                 payload={"group": f"g{g}"}) for g in range(5)]
    for c in (remote, local):
        c.create_collection(COLL, vectors_config=dense, shard_number=3,
                            sparse_vectors_config={"s": models.SparseVectorParams()})
        c.create_collection(OTHER, vectors_config=dense, shard_number=2)
        c.create_payload_index(COLL, "s", models.PayloadSchemaType.KEYWORD)
        c.create_payload_index(COLL, "g", models.PayloadSchemaType.INTEGER)
        c.upsert(COLL, pts[:120], wait=True)
        c.upsert(COLL, pts[120:], wait=True)
        c.upsert(OTHER, other, wait=True)
    yield remote, local
    remote.close()
    local.close()


def _compare(got: list[Any], want: list[Any], offset: int = 0) -> None:
    assert_same_ranking(got, want, offset=offset)
    for a, b in paired(got, want):
        assert a.payload == b.payload
        assert a.order_value == b.order_value


def _both(clients: tuple[QdrantClient, QdrantClient], **kw: Any) -> int:
    remote, local = clients
    got = remote.query_points(COLL, **kw).points
    want = local.query_points(COLL, **kw).points
    _compare(got, want, kw.get("offset") or 0)
    return len(got)


def _vec(n: np.random.Generator, using: str) -> Any:
    if using == "s":
        return _sparse(n)
    return n.standard_normal(DIMS[using]).tolist()


def _filter(r: random.Random) -> models.Filter | None:
    pick = r.random()
    if pick < 0.5:
        return None
    if pick < 0.75:
        return models.Filter(must=[models.FieldCondition(
            key="i", range=models.Range(gte=r.randrange(10)))])
    return models.Filter(should=[
        models.FieldCondition(key="s", match=models.MatchValue(value=r.choice(S_VALUES))),
        models.FieldCondition(key="i", range=models.Range(lt=r.randrange(5, 15)))])


FORMULAS: list[tuple[Any, dict[str, Any]]] = [
    (models.SumExpression(sum=["$score", models.MultExpression(mult=[0.1, "f"])]), {"f": 0}),
    (models.SumExpression(sum=["$score", models.MultExpression(mult=[
        0.05, models.FieldCondition(key="s", match=models.MatchValue(value="x"))])]), {}),
    (models.SumExpression(sum=["$score[0]", models.MultExpression(mult=[0.5, "$score[1]"])]),
     {"$score[1]": -1}),
    (models.SumExpression(sum=["$score", models.GaussDecayExpression(
        gauss_decay=models.DecayParamsExpression(x="i", target=10, scale=5, midpoint=0.3))]), {}),
]


def _leaf(r: random.Random, n: np.random.Generator) -> models.Prefetch:
    using = r.choice(["a", "b", "s"])
    return models.Prefetch(query=_vec(n, using), using=using, filter=_filter(r),
                           limit=r.randrange(3, 30))


def _combine(r: random.Random, n: np.random.Generator, k: int) -> tuple[Any, str | None]:
    kind = r.choice(["rrf", "dbsf", "rrf_k", "formula", "rescore"])
    if kind == "rrf":
        return models.FusionQuery(fusion=models.Fusion.RRF), None
    if kind == "dbsf":
        return models.FusionQuery(fusion=models.Fusion.DBSF), None
    if kind == "rrf_k":
        weights = [r.choice([0.5, 1.0, 3.0]) for _ in range(k)] if r.random() < 0.5 else None
        return models.RrfQuery(rrf=models.Rrf(k=r.randrange(1, 80), weights=weights)), None
    if kind == "formula":
        expr, defaults = r.choice(FORMULAS[:2] + FORMULAS[3:])
        return models.FormulaQuery(formula=expr, defaults=defaults), None
    using = r.choice(["a", "b"])
    return models.NearestQuery(nearest=_vec(n, using)), using


def _node(r: random.Random, n: np.random.Generator, depth: int) -> models.Prefetch:
    if depth >= 2 or r.random() < 0.4:
        return _leaf(r, n)
    children = [_node(r, n, depth + 1) for _ in range(r.randrange(1, 3))]
    query, using = _combine(r, n, len(children))
    return models.Prefetch(prefetch=children, query=query, using=using, filter=_filter(r),
                           limit=r.randrange(3, 30))


def test_random_prefetch_trees(clients: tuple[QdrantClient, QdrantClient]) -> None:
    r, n = random.Random(3), np.random.default_rng(3)
    found = []
    for _ in range(25):
        children = [_node(r, n, 1) for _ in range(r.randrange(1, 3))]
        query, using = _combine(r, n, len(children))
        found.append(_both(clients, prefetch=children, query=query, using=using,
                           query_filter=_filter(r), limit=r.randrange(1, 20),
                           offset=r.choice([0, 0, 2]), with_payload=r.random() < 0.5))
    assert sum(1 for f in found if f > 0) >= 15, found


def test_hybrid_dense_sparse_fusion_and_formulas(
        clients: tuple[QdrantClient, QdrantClient]) -> None:
    n = np.random.default_rng(5)
    for _ in range(2):
        pf = [models.Prefetch(query=_vec(n, "a"), using="a", limit=25),
              models.Prefetch(query=_vec(n, "s"), using="s", limit=25)]
        for q in (models.FusionQuery(fusion=models.Fusion.RRF),
                  models.FusionQuery(fusion=models.Fusion.DBSF),
                  models.RrfQuery(rrf=models.Rrf(k=10, weights=[1.0, 2.5]))):
            assert _both(clients, prefetch=pf, query=q, limit=12, offset=1,
                         with_payload=True) == 12
        for expr, defaults in FORMULAS:
            assert _both(clients, prefetch=pf, limit=10, with_payload=True,
                         query=models.FormulaQuery(formula=expr, defaults=defaults)) == 10
    got = clients[0].query_points(COLL, prefetch=pf, query=models.FusionQuery(
        fusion=models.Fusion.RRF), limit=5, with_vectors=["a"]).points
    want = {str(p.id): p.vector for p in clients[0].retrieve(COLL, [p.id for p in got],
                                                             with_vectors=["a"])}
    assert [p.vector for p in got] == [want[str(p.id)] for p in got]  # the shards' own


def test_point_ids_examples_and_lookup_from(
        clients: tuple[QdrantClient, QdrantClient], cluster_server: Any) -> None:
    n = np.random.default_rng(7)
    flt = models.Filter(must=[models.FieldCondition(key="i", range=models.Range(gte=4))])
    _both(clients, query=17, using="a", limit=6)  # the point itself is excluded
    _both(clients, query=23, using="b", limit=6, offset=2, query_filter=flt)
    _both(clients, query=1003, using="b", limit=6,
          lookup_from=models.LookupLocation(collection=OTHER, vector="b"))
    _both(clients, prefetch=[models.Prefetch(query=1005, using="a", limit=20,
                                             lookup_from=models.LookupLocation(collection=OTHER)),
                             models.Prefetch(query=5, using="b", limit=20)],
          query=models.FusionQuery(fusion=models.Fusion.RRF), limit=10)
    for strategy in (None, "best_score", "sum_scores"):
        for using in ("a", "b"):
            rec = models.RecommendInput(positive=[3, 40, _vec(n, using)], negative=[8],
                                        strategy=strategy)
            _both(clients, query=models.RecommendQuery(recommend=rec), using=using, limit=8,
                  query_filter=flt)
    rec = models.RecommendInput(positive=[1001], negative=[1002], strategy="best_score")
    _both(clients, query=models.RecommendQuery(recommend=rec), using="a", limit=8,
          lookup_from=models.LookupLocation(collection=OTHER))
    pairs = [models.ContextPair(positive=11, negative=12),
             models.ContextPair(positive=_vec(n, "a"), negative=13)]
    _both(clients, query=models.DiscoverQuery(discover=models.DiscoverInput(
        target=14, context=pairs)), using="a", limit=9)
    _both(clients, query=models.ContextQuery(context=pairs), using="a", limit=9)
    _both(clients, prefetch=models.Prefetch(query=_vec(n, "b"), using="b", limit=40),
          query=models.RecommendQuery(recommend=models.RecommendInput(positive=[30, 31])),
          using="a", limit=7)
    with httpx.Client(base_url=cluster_server.url, timeout=60) as h:  # legacy endpoints
        body = {"positive": [3, 40], "negative": [8], "strategy": "best_score", "limit": 8,
                "using": "a", "with_payload": True}
        got = h.post(f"/collections/{COLL}/points/recommend", json=body).json()["result"]
        want = clients[1].query_points(COLL, query=models.RecommendQuery(
            recommend=models.RecommendInput(positive=[3, 40], negative=[8],
                                            strategy="best_score")),
            using="a", limit=8, with_payload=True).points
        assert_same_ranking([SimpleNamespace(**p) for p in got], want)
        got = h.post(f"/collections/{COLL}/points/discover/batch", json={"searches": [
            {"target": 14, "context": [{"positive": 11, "negative": 12}], "limit": 5,
             "using": "a"}]}).json()["result"][0]
        want = clients[1].query_points(COLL, query=models.DiscoverQuery(
            discover=models.DiscoverInput(target=14, context=pairs[:1])), using="a",
            limit=5).points
        assert_same_ranking([SimpleNamespace(**p) for p in got], want)
        r = h.post(f"/collections/{COLL}/points/query", json={"query": 99999, "using": "a"})
        assert r.status_code == 404 and "99999" in r.json()["status"]["error"]


def test_order_by_mmr_sample_and_batch(clients: tuple[QdrantClient, QdrantClient]) -> None:
    n = np.random.default_rng(8)
    remote, local = clients
    for kw in ({"query": models.OrderByQuery(order_by="f"), "limit": 15},
               {"query": models.OrderByQuery(order_by=models.OrderBy(key="f", direction="desc")),
                "prefetch": models.Prefetch(query=_vec(n, "a"), using="a", limit=30),
                "limit": 10}):
        got = remote.query_points(COLL, with_payload=True, **kw).points
        want = local.query_points(COLL, with_payload=True, **kw).points
        assert [p.order_value for p in got] == [p.order_value for p in want]
    for using in ("a", "b"):
        for diversity in (0.0, 0.4, 0.9):
            mmr = models.Mmr(diversity=diversity, candidates_limit=40)
            _both(clients, query=models.NearestQuery(nearest=_vec(n, using), mmr=mmr),
                  using=using, limit=10, offset=1, query_filter=_filter(random.Random(1)))
    _both(clients, prefetch=models.Prefetch(query=_vec(n, "b"), using="b", limit=50),
          query=models.NearestQuery(nearest=_vec(n, "a"), mmr=models.Mmr(diversity=0.5)),
          using="a", limit=8)
    flt = models.Filter(must=[models.FieldCondition(key="s", match=models.MatchValue(value="x"))])
    allowed = {p.id for p in local.scroll(COLL, scroll_filter=flt, limit=N)[0]}
    got = remote.query_points(COLL, query=models.SampleQuery(sample=models.Sample.RANDOM),
                              query_filter=flt, limit=7).points
    assert len(got) == 7 and len({p.id for p in got}) == 7 and {p.id for p in got} <= allowed
    r = random.Random(9)
    reqs = []
    for i in range(6):
        children = [_node(r, n, 2) for _ in range(2)]
        query, using = _combine(r, n, 2)
        if i % 3 == 0:  # plain searches in the same batch
            children, query, using = [], _vec(n, "a"), "a"
        reqs.append(models.QueryRequest(prefetch=children or None, query=query, using=using,
                                        limit=7, filter=_filter(r), with_payload=True))
    reqs.append(models.QueryRequest(query=21, using="b", limit=5))
    for g, w in zip(remote.query_batch_points(COLL, reqs), local.query_batch_points(COLL, reqs),
                    strict=True):
        _compare(g.points, w.points)


def _same_groups(got: Any, want: Any) -> None:
    assert [g.id for g in got.groups] == [g.id for g in want.groups]
    for g, w in zip(got.groups, want.groups, strict=True):
        assert_same_ranking(g.hits, w.hits)
        assert (g.lookup and (g.lookup.id, g.lookup.payload)) == \
            (w.lookup and (w.lookup.id, w.lookup.payload))


def test_groups_with_prefetch_and_lookup(clients: tuple[QdrantClient, QdrantClient]) -> None:
    n = np.random.default_rng(11)
    remote, local = clients
    lookup = models.WithLookup(collection=OTHER, with_payload=True)
    for kw in (
        {"query": _vec(n, "a"), "using": "a", "with_lookup": lookup},
        {"query": models.RecommendQuery(recommend=models.RecommendInput(positive=[2, 9])),
         "using": "b", "with_lookup": OTHER},
        # prefetch limits that reach every point: the server multiplies them by group_size,
        # local mode lifts them to every point (tests/e2e/test_groups_congruence.py)
        {"prefetch": [models.Prefetch(query=_vec(n, "a"), using="a", limit=N),
                      models.Prefetch(query=_vec(n, "s"), using="s", limit=N)],
         "query": models.FusionQuery(fusion=models.Fusion.RRF), "with_lookup": lookup},
    ):
        got = remote.query_points_groups(COLL, group_by="g", limit=4, group_size=3, **kw)
        want = local.query_points_groups(COLL, group_by="g", limit=4, group_size=3, **kw)
        _same_groups(got, want)
    assert any(g.lookup is not None for g in got.groups)


def test_aliases(clients: tuple[QdrantClient, QdrantClient], cluster_server: Any) -> None:
    remote, local = clients
    n = np.random.default_rng(13)
    ops = [models.CreateAliasOperation(create_alias=models.CreateAlias(
        collection_name=COLL, alias_name="hq_alias")),
        models.CreateAliasOperation(create_alias=models.CreateAlias(
            collection_name=OTHER, alias_name="other_alias"))]
    for c in (remote, local):
        c.update_collection_aliases(ops)
    def key(r: Any) -> list[tuple[str, str]]:
        return sorted((a.alias_name, a.collection_name) for a in r.aliases)
    assert key(remote.get_aliases()) == key(local.get_aliases())
    assert key(remote.get_collection_aliases(COLL)) == key(local.get_collection_aliases(COLL))
    q = _vec(n, "a")
    for c in (remote, local):
        assert c.count("hq_alias").count == N
    assert_same_ranking(
        remote.query_points("hq_alias", query=q, using="a", limit=9,
                            lookup_from=None).points,
        local.query_points("hq_alias", query=q, using="a", limit=9).points)
    _both(clients, query=1002, using="a", limit=5,
          lookup_from=models.LookupLocation(collection="other_alias"))
    rename = [models.RenameAliasOperation(rename_alias=models.RenameAlias(
        old_alias_name="hq_alias", new_alias_name="hq_renamed")),
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="other_alias"))]
    for c in (remote, local):
        c.update_collection_aliases(rename)
    assert key(remote.get_aliases()) == key(local.get_aliases()) == [("hq_renamed", COLL)]
    assert remote.collection_exists("hq_renamed")
    assert remote.get_collection("hq_renamed").points_count == N
    with httpx.Client(base_url=cluster_server.url, timeout=60) as h:
        r = h.post("/collections/aliases", json={"actions": [
            {"create_alias": {"collection_name": COLL, "alias_name": OTHER}}]})
        assert r.status_code == 409  # clashes with a collection
        r = h.put("/collections/hq_renamed", json={"vectors": {"size": 2, "distance": "Dot"}})
        assert r.status_code == 409
        r = h.post("/collections/aliases", json={"actions": [
            {"delete_alias": {"alias_name": "nope"}}]})
        assert r.status_code == 404
    assert key(remote.get_aliases()) == [("hq_renamed", COLL)]  # nothing changed
    remote.update_collection_aliases([models.DeleteAliasOperation(
        delete_alias=models.DeleteAlias(alias_name="hq_renamed"))])
    assert remote.get_aliases().aliases == []


def _rows(pairs: list[Any], ids: list[Any]) -> list[list[Any]]:
    out: dict[Any, list[Any]] = {i: [] for i in ids}
    for p in pairs:
        out[p.a].append(SimpleNamespace(id=p.b, score=p.score))
    return [out[i] for i in ids]


def test_distance_matrix(clients: tuple[QdrantClient, QdrantClient]) -> None:
    remote, local = clients
    flt = models.Filter(must=[models.FieldCondition(key="i", range=models.Range(lt=3))])
    total = local.count(COLL, count_filter=flt).count
    for using in ("a", "b"):  # a sample of every matching point: exact
        got = remote.search_matrix_offsets(COLL, query_filter=flt, sample=total + 5, limit=4,
                                           using=using)
        want = local.search_matrix_offsets(COLL, query_filter=flt, sample=total + 5, limit=4,
                                           using=using)
        assert [str(i) for i in got.ids] == [str(i) for i in want.ids]
        gp = remote.search_matrix_pairs(COLL, query_filter=flt, sample=total + 5, limit=3,
                                        using=using).pairs
        wp = local.search_matrix_pairs(COLL, query_filter=flt, sample=total + 5, limit=3,
                                       using=using).pairs
        ids = sorted({p.a for p in wp}, key=str)
        for g, w in zip(_rows(gp, ids), _rows(wp, ids), strict=True):
            assert_same_ranking(g, w)
    small = remote.search_matrix_pairs(COLL, sample=6, limit=2, using="a")
    assert len({p.a for p in small.pairs}) == 6 and len(small.pairs) == 12


def test_what_cannot_be_exact_is_400(clients: tuple[QdrantClient, QdrantClient],
                                     cluster_server: Any) -> None:
    with httpx.Client(base_url=cluster_server.url, timeout=120) as h:
        r = h.put("/collections/idf", json={"sparse_vectors": {"t": {"modifier": "idf"}},
                                            "shard_number": 2})
        assert r.status_code == 200, r.text
        r = h.post("/collections/idf/points/query", json={
            "query": {"indices": [1], "values": [1.0]}, "using": "t"})
        assert r.status_code == 400 and "idf" in r.json()["status"]["error"]
        assert h.delete("/collections/idf").status_code == 200
        r = h.post(f"/collections/{COLL}/points/query/groups", json={"group_by": "g"})
        assert r.status_code == 400 and "cluster mode" in r.json()["status"]["error"]
