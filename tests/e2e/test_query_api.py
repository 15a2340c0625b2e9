"""The universal Query API through the real server, against qdrant-client's local mode.

Random dense data (two named vectors), then random prefetch trees (depth ≤ 3, filters inside
prefetches), every fusion kind, every formula operator, order_by, MMR, rescoring with the
second vector, lookup_from and batches; ids, order and scores must agree (float tolerance).

Written-down semantics (local mode and the server agree on these; Quiver follows them):
* a level's filter propagates into its prefetches, merged clause-wise (`should` lists pool);
* `score_threshold` is strict for nearest searches, inclusive after fusion and formulas;
* RRF/DBSF/formula ties keep the order in which points first appear in the prefetches;
* `sample: random` is only checked for size and membership.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking, paired

N = 240
COLL, OTHER = "qapi", "qapi_lookup"
S_VALUES = ["x", "y", "z"]


def _payload(rng: random.Random, i: int) -> dict[str, Any]:
    p: dict[str, Any] = {"i": rng.randrange(20), "s": rng.choice(S_VALUES),
                         "dt": f"2024-01-{1 + rng.randrange(28):02d}T{rng.randrange(24):02d}:00:00Z",
                         "loc": {"lon": rng.uniform(-10, 10), "lat": rng.uniform(40, 50)}}
    if rng.random() < 0.9:
        p["f"] = round(rng.uniform(-5, 5), 3)
    return p


@pytest.fixture(scope="module")
def clients(server: Any) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    remote, local = QdrantClient(url=server.url, timeout=60), QdrantClient(":memory:")
    rng = random.Random(12)
    nrng = np.random.default_rng(12)
    cfg = {"a": models.VectorParams(size=8, distance=models.Distance.COSINE),
           "b": models.VectorParams(size=16, distance=models.Distance.DOT)}
    for c in (remote, local):
        for name in (COLL, OTHER):
            if c.collection_exists(name):
                c.delete_collection(name)
            c.create_collection(name, vectors_config=cfg)
    pts = [models.PointStruct(id=i, vector={"a": nrng.standard_normal(8).tolist(),
                                            "b": nrng.standard_normal(16).tolist()},
                              payload=_payload(rng, i)) for i in range(N)]
    other = [models.PointStruct(id=1000 + i, vector={"a": nrng.standard_normal(8).tolist(),
                                                     "b": nrng.standard_normal(16).tolist()})
             for i in range(10)]
    for c in (remote, local):
        c.upsert(COLL, pts[: N // 2], wait=True)  # two upserts: possibly two segments
        c.upsert(COLL, pts[N // 2:], wait=True)
        c.upsert(OTHER, other, wait=True)
    yield remote, local
    remote.close()
    local.close()


def _compare(q: list[models.ScoredPoint], loc: list[models.ScoredPoint], ctx: str,
             offset: int = 0) -> None:
    assert_same_ranking(q, loc, offset=offset)  # RRF and DBSF scores tie often
    for a, b in paired(q, loc):
        assert a.payload == b.payload, ctx
        assert a.order_value == b.order_value, ctx


def _both(clients: tuple[QdrantClient, QdrantClient], **kw: Any) -> int:
    remote, local = clients
    q = remote.query_points(COLL, **kw).points
    loc = local.query_points(COLL, **kw).points
    _compare(q, loc, repr(kw), kw.get("offset") or 0)
    return len(q)


# ---- generators -------------------------------------------------------------------------------


def _vec(rng: np.random.Generator, using: str) -> list[float]:
    return rng.standard_normal(8 if using == "a" else 16).tolist()


def _filter(r: random.Random) -> models.Filter | None:
    pick = r.random()
    if pick < 0.4:
        return None
    if pick < 0.6:
        return models.Filter(must=[models.FieldCondition(
            key="i", range=models.Range(gte=r.randrange(10)))])
    if pick < 0.8:
        return models.Filter(should=[
            models.FieldCondition(key="s", match=models.MatchValue(value=r.choice(S_VALUES))),
            models.FieldCondition(key="i", range=models.Range(lt=r.randrange(5, 15)))])
    return models.Filter(must_not=[models.FieldCondition(
        key="s", match=models.MatchValue(value=r.choice(S_VALUES)))])


FORMULAS: list[tuple[Any, dict[str, Any]]] = [
    (models.SumExpression(sum=["$score", models.MultExpression(mult=[0.1, "f"])]), {"f": 0}),
    (models.SumExpression(sum=["$score", models.MultExpression(mult=[
        0.05, models.FieldCondition(key="s", match=models.MatchValue(value="x"))])]), {}),
    (models.DivExpression(div=models.DivParams(
        left="$score", right=models.SumExpression(sum=[2, models.AbsExpression(abs="f")]),
        by_zero_default=0)), {"f": 1}),
    (models.SumExpression(sum=[models.NegExpression(neg="$score"), models.PowExpression(
        pow=models.PowParams(base=models.SumExpression(sum=["$score", 3]), exponent=2))]), {}),
    (models.SumExpression(sum=[models.SqrtExpression(sqrt=models.SumExpression(
        sum=["$score", 10])), models.Log10Expression(log10=models.SumExpression(
            sum=["$score", 10])), models.LnExpression(ln=models.SumExpression(
                sum=["$score", 10])), models.ExpExpression(exp="$score")]), {}),
    (models.SumExpression(sum=["$score", models.GaussDecayExpression(
        gauss_decay=models.DecayParamsExpression(x="i", target=10, scale=5, midpoint=0.3))]), {}),
    (models.SumExpression(sum=["$score", models.MultExpression(mult=[0.2, models.ExpDecayExpression(
        exp_decay=models.DecayParamsExpression(x="f", scale=2))])]), {"f": 0}),
    (models.SumExpression(sum=["$score", models.LinDecayExpression(
        lin_decay=models.DecayParamsExpression(x="i", target=5, scale=30, midpoint=0.1))]), {}),
    (models.SumExpression(sum=["$score", models.ExpDecayExpression(
        exp_decay=models.DecayParamsExpression(
            x=models.DatetimeKeyExpression(datetime_key="dt"),
            target=models.DatetimeExpression(datetime="2024-01-15T00:00:00Z"),
            scale=86400 * 10))]), {}),
    (models.SumExpression(sum=["$score", models.MultExpression(mult=[
        -1e-7, models.GeoDistance(geo_distance=models.GeoDistanceParams(
            origin=models.GeoPoint(lon=0, lat=45), to="loc"))])]), {}),
    (models.SumExpression(sum=["$score[0]", models.MultExpression(mult=[0.5, "$score[1]"])]),
     {"$score[1]": -1}),
]


def _leaf(r: random.Random, n: np.random.Generator) -> models.Prefetch:
    using = r.choice(["a", "b"])
    return models.Prefetch(query=_vec(n, using), using=using, filter=_filter(r),
                           limit=r.randrange(3, 30))


def _node(r: random.Random, n: np.random.Generator, depth: int) -> models.Prefetch:
    if depth >= 3 or r.random() < 0.35:
        return _leaf(r, n)
    children = [_node(r, n, depth + 1) for _ in range(r.randrange(1, 4))]
    query, using = _combine(r, n, len(children))
    return models.Prefetch(prefetch=children, query=query, using=using, filter=_filter(r),
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
        expr, defaults = r.choice(FORMULAS)
        return models.FormulaQuery(formula=expr, defaults=defaults), None
    using = r.choice(["a", "b"])  # rescore the candidates with a vector
    return models.NearestQuery(nearest=_vec(n, using)), using


# ---- congruence -------------------------------------------------------------------------------


def test_random_prefetch_trees(clients: tuple[QdrantClient, QdrantClient]) -> None:
    r, n = random.Random(3), np.random.default_rng(3)
    found = []
    for _ in range(60):
        children = [_node(r, n, 1) for _ in range(r.randrange(1, 4))]
        query, using = _combine(r, n, len(children))
        found.append(_both(clients, prefetch=children, query=query, using=using,
                           query_filter=_filter(r), limit=r.randrange(1, 20),
                           offset=r.choice([0, 0, 2]), with_payload=r.random() < 0.3))
    assert sum(1 for f in found if f > 0) >= 40, found  # the trees mostly find something


def test_every_formula_operator(clients: tuple[QdrantClient, QdrantClient]) -> None:
    n = np.random.default_rng(5)
    for expr, defaults in FORMULAS:
        pf = [models.Prefetch(query=_vec(n, "a"), using="a", limit=25),
              models.Prefetch(query=_vec(n, "b"), using="b", limit=25)]
        assert _both(clients, prefetch=pf, limit=15, with_payload=True,
                     query=models.FormulaQuery(formula=expr, defaults=defaults)) == 15


def test_fusion_kinds_and_thresholds(clients: tuple[QdrantClient, QdrantClient]) -> None:
    n = np.random.default_rng(6)
    pf = [models.Prefetch(query=_vec(n, "a"), using="a", limit=20),
          models.Prefetch(query=_vec(n, "b"), using="b", limit=20)]
    for q in (models.FusionQuery(fusion=models.Fusion.RRF),
              models.FusionQuery(fusion=models.Fusion.DBSF),
              models.RrfQuery(rrf=models.Rrf(k=10, weights=[1.0, 2.5]))):
        _both(clients, prefetch=pf, query=q, limit=12, offset=1)
        top = clients[1].query_points(COLL, prefetch=pf, query=q, limit=12).points
        thr = top[5].score  # RRF scores are exact: a point on the threshold is kept by both
        if q == models.FusionQuery(fusion=models.Fusion.DBSF):
            # DBSF scores carry the prefetch scores' rounding (float32 vectors here, float64
            # in local mode, BLAS kernels per CPU): a threshold on a point's own score would
            # be decided by the last bits, so it goes between two points
            thr = (top[5].score + top[6].score) / 2
        _both(clients, prefetch=pf, query=q, limit=12, score_threshold=thr)


def test_rescore_with_second_vector(clients: tuple[QdrantClient, QdrantClient]) -> None:
    n = np.random.default_rng(7)
    for seed in range(5):
        pf = models.Prefetch(query=_vec(n, "a"), using="a", limit=40,
                             filter=_filter(random.Random(seed)))
        _both(clients, prefetch=pf, query=_vec(n, "b"), using="b", limit=10, offset=2,
              with_payload=True)


def test_order_by_and_mmr(clients: tuple[QdrantClient, QdrantClient]) -> None:
    n = np.random.default_rng(8)
    _both(clients, query=models.OrderByQuery(order_by="f"), limit=15, with_payload=True)
    _both(clients, query=models.OrderByQuery(order_by=models.OrderBy(key="f", direction="desc")),
          prefetch=models.Prefetch(query=_vec(n, "a"), using="a", limit=30), limit=10)
    for using in ("a", "b"):
        for diversity in (0.0, 0.3, 0.9):
            mmr = models.Mmr(diversity=diversity, candidates_limit=40)
            _both(clients, query=models.NearestQuery(nearest=_vec(n, using), mmr=mmr),
                  using=using, limit=10, offset=1, query_filter=_filter(random.Random(1)))
    _both(clients, prefetch=models.Prefetch(query=_vec(n, "b"), using="b", limit=50),
          query=models.NearestQuery(nearest=_vec(n, "a"), mmr=models.Mmr(diversity=0.5)),
          using="a", limit=8)


def test_point_ids_and_lookup_from(clients: tuple[QdrantClient, QdrantClient]) -> None:
    lookup = models.LookupLocation(collection=OTHER, vector="b")
    _both(clients, query=1003, using="b", lookup_from=lookup, limit=6)
    _both(clients, query=1004, using="a", lookup_from=models.LookupLocation(collection=OTHER),
          limit=6)
    _both(clients, query=17, using="a", limit=6)  # the point itself is excluded
    _both(clients, prefetch=[models.Prefetch(query=1005, using="a", limit=20,
                                             lookup_from=models.LookupLocation(collection=OTHER)),
                             models.Prefetch(query=5, using="b", limit=20)],
          query=models.FusionQuery(fusion=models.Fusion.RRF), limit=10)


def test_sample_random(clients: tuple[QdrantClient, QdrantClient]) -> None:
    remote = clients[0]
    flt = models.Filter(must=[models.FieldCondition(key="s", match=models.MatchValue(value="x"))])
    allowed = {p.id for p in remote.scroll(COLL, scroll_filter=flt, limit=N)[0]}
    got = remote.query_points(COLL, query=models.SampleQuery(sample=models.Sample.RANDOM),
                              query_filter=flt, limit=7).points
    assert len(got) == 7 and len({p.id for p in got}) == 7 and {p.id for p in got} <= allowed


def test_batch(clients: tuple[QdrantClient, QdrantClient]) -> None:
    r, n = random.Random(9), np.random.default_rng(9)
    reqs = []
    for i in range(8):
        children = [_node(r, n, 2) for _ in range(2)]
        query, using = _combine(r, n, 2)
        if i % 3 == 0:  # plain searches in the same batch
            children, query, using = [], _vec(n, "a"), "a"
        reqs.append(models.QueryRequest(prefetch=children or None, query=query, using=using,
                                        limit=7, filter=_filter(r)))
    remote, local = clients
    for q, loc in zip(remote.query_batch_points(COLL, reqs), local.query_batch_points(COLL, reqs),
                      strict=True):
        _compare(q.points, loc.points, "batch")


# ---- bad input --------------------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"query": [0.1] * 8, "using": "a"}
    for _ in range(depth):
        node = {"prefetch": node, "query": {"fusion": "rrf"}}
    return node


@pytest.mark.parametrize(("body", "message"), [
    ({"prefetch": {"query": [0.1] * 8, "using": "nope"}, "query": {"fusion": "rrf"}},
     "Not existing vector name error: nope"),
    (_nested(20), "prefetch nesting is too deep: at most 16 levels are supported"),
    ({"query": {"fusion": "rrf"}}, "`fusion` query needs `prefetch`"),
    ({"query": {"formula": "$score"}}, "`formula` query needs `prefetch`"),
    ({"prefetch": {"query": [0.1] * 8, "using": "a"}, "query": {"formula": {"mult": 3}}},
     "formula: `mult` takes a list of expressions"),
    ({"prefetch": {"query": [0.1] * 8, "using": "a"}, "query": {"formula": "s"}},
     "Expected number value for s"),
    ({"prefetch": {"query": [0.1] * 8, "using": "a"}, "query": {"rrf": {"k": 0}}},
     "rrf k value 0 is invalid"),
    ({"prefetch": {"query": [0.1] * 8, "using": "a"}, "query": {"rrf": {"weights": [1, 2]}}},
     "RRF weights must match the number of prefetches"),
    ({"prefetch": {"query": [0.1] * 8, "using": "a"}, "query": {"fusion": "max"}},
     "unknown fusion `max`"),
    ({"prefetch": {"query": [0.1] * 8, "using": "a"}}, "A query is needed to merge the prefetches"),
    ({"prefetch": {"query": [0.1] * 8, "using": "a"}, "query": {"fusion": "rrf"}, "using": "a"},
     "Fusion queries cannot be combined with the 'using' field."),
    ({"query": {"relevance_feedback": {"positive": [1]}}, "using": "a"},
     "query type `relevance_feedback` is not supported by Quiver yet"),
    ({"query": {"nearest": [0.1] * 8, "mmr": {"diversity": 2}}, "using": "a"},
     "mmr.diversity value 2 is invalid"),
])
def test_bad_input(server: Any, clients: Any, body: dict[str, Any], message: str) -> None:
    resp = httpx.post(f"{server.url}/collections/{COLL}/points/query", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["status"]["error"]
