"""qdrant.Points over gRPC against the same operations over REST, on one real server.

Every RPC runs through the REST route's handler (api/rpc/dispatch.py), so each test does an
operation both ways (qdrant-client with prefer_grpc=True / False, or the raw stub next to the
REST body for the RPCs the client no longer wraps) on random data and compares the answers;
writes through gRPC must be visible over REST, and bad input is refused with REST's message.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import qdrant_client.grpc as pb
from qdrant_client import QdrantClient, models
from qdrant_client.conversions.conversion import GrpcToRest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ranking import assert_same_ranking  # noqa: E402

DIM = 8
N = 120
CITIES = ["berlin", "paris", "rome", "oslo"]


@pytest.fixture(scope="module")
def clients(server: Any) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    g = QdrantClient(url=server.url, grpc_port=server.grpc_port, prefer_grpc=True, timeout=30)
    r = QdrantClient(url=server.url, prefer_grpc=False, timeout=30)
    yield g, r
    g.close()
    r.close()


def _name(tag: str) -> str:
    return f"g2_{tag}_{uuid.uuid4().hex[:8]}"


def _payload(i: int, rng: np.random.Generator) -> dict[str, Any]:
    return {"city": CITIES[i % len(CITIES)], "n": int(rng.integers(0, 50)),
            "x": float(rng.random()), "ok": bool(i % 3), "tags": ["a", "b"][: i % 3],
            "nested": {"k": i, "none": None}, "big": -(1 << 40) + i}


def _sparse(rng: np.random.Generator) -> models.SparseVector:
    idx = sorted(rng.choice(50, size=5, replace=False).tolist())
    return models.SparseVector(indices=idx, values=rng.random(5).round(4).tolist())


@pytest.fixture(scope="module")
def corpus(clients: tuple[QdrantClient, QdrantClient]) -> Iterator[str]:
    """One collection (named dense `a` cosine, `b` dot, sparse `s`), written over gRPC,
    read by the read tests."""
    g, r = clients
    name = _name("reads")
    r.create_collection(name, vectors_config={
        "a": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        "b": models.VectorParams(size=DIM, distance=models.Distance.DOT)},
        sparse_vectors_config={"s": models.SparseVectorParams()})
    rng = np.random.default_rng(14)
    pts = [models.PointStruct(id=i if i % 5 else str(uuid.UUID(int=i + 1)),
                              vector={"a": rng.normal(size=DIM).tolist(),
                                      "b": rng.normal(size=DIM).tolist(), "s": _sparse(rng)},
                              payload=_payload(i, rng)) for i in range(N)]
    g.upsert(name, pts, wait=True)
    r.create_payload_index(name, "city", models.PayloadSchemaType.KEYWORD, wait=True)
    r.create_payload_index(name, "n", models.PayloadSchemaType.INTEGER, wait=True)
    yield name
    r.delete_collection(name)


def _same_points(got: list[Any], want: list[Any], ranked: bool = True) -> None:
    if ranked:
        assert_same_ranking(got, want)
    by_id = {w.id: w for w in want}
    for p in got:
        w = by_id.get(p.id)
        if w is None:
            continue
        assert p.payload == w.payload
        _same_vectors(p.vector, w.vector)


def _same_vectors(a: Any, b: Any) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b)
        for k in a:
            _same_vectors(a[k], b[k])
    elif isinstance(a, models.SparseVector):
        assert a.indices == b.indices
        assert a.values == pytest.approx(b.values, rel=1e-6)
    elif isinstance(a, list):
        assert np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-6, atol=1e-7)
    else:
        assert a == b


# ---- writes ------------------------------------------------------------------------------------


def test_upload_points_fast_path_visible_over_rest(clients: Any) -> None:
    """upload_points(prefer_grpc) (dense default vectors: the numpy batch form), duplicates and
    mixed vectors (the general form): what REST reads back is what was sent."""
    g, r = clients
    name = _name("up")
    r.create_collection(name, vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.COSINE))
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(300, DIM)).astype(np.float32)
    ids = list(range(300))
    pls = [_payload(i, rng) for i in ids]
    g.upload_points(name, [models.PointStruct(id=i, vector=vecs[i].tolist(), payload=pls[i])
                           for i in ids], batch_size=64, wait=True)
    # duplicates in one call: the last occurrence wins, as over REST
    g.upsert(name, [models.PointStruct(id=7, vector=vecs[1].tolist(), payload={"v": 1}),
                    models.PointStruct(id=7, vector=vecs[2].tolist(), payload={"v": 2})])
    got = {p.id: p for p in r.retrieve(name, ids, with_vectors=True)}
    assert len(got) == 300
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    unit[7] = vecs[2] / np.linalg.norm(vecs[2])
    assert np.allclose(np.array([got[i].vector for i in ids]), unit, atol=1e-6)
    assert got[7].payload == {"v": 2}
    assert all(got[i].payload == pls[i] for i in ids if i != 7)
    r.delete_collection(name)


def test_named_sparse_and_multivector_upserts(clients: Any) -> None:
    g, r = clients
    name = _name("mv")
    r.create_collection(name, vectors_config={
        "d": models.VectorParams(size=4, distance=models.Distance.EUCLID),
        "m": models.VectorParams(size=3, distance=models.Distance.DOT,
                                 multivector_config=models.MultiVectorConfig(
                                     comparator=models.MultiVectorComparator.MAX_SIM))},
        sparse_vectors_config={"s": models.SparseVectorParams()})
    rng = np.random.default_rng(2)
    pts = [models.PointStruct(id=i, vector={"d": rng.normal(size=4).tolist(),
                                            "m": rng.normal(size=(2 + i % 2, 3)).tolist(),
                                            "s": _sparse(rng)}, payload={"i": i})
           for i in range(20)]
    only_d = [models.PointStruct(id=100 + i, vector={"d": rng.normal(size=4).tolist()})
              for i in range(10)]  # the same names on every point: the numpy path
    g.upsert(name, pts)
    g.upsert(name, only_d)
    sent = {p.id: p for p in pts + only_d}
    got = r.retrieve(name, list(sent), with_vectors=True)
    assert len(got) == 30
    for p in got:
        _same_vectors(p.vector, sent[p.id].vector)
    r.delete_collection(name)


def test_writes_match_rest(clients: Any) -> None:
    """The same sequence of writes over gRPC on one collection and over REST on another
    leaves both equal."""
    g, r = clients
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(40, DIM)).tolist()
    names = []
    for c in (g, r):
        name = _name("w")
        names.append(name)
        r.create_collection(name, vectors_config={
            "a": models.VectorParams(size=DIM, distance=models.Distance.DOT),
            "b": models.VectorParams(size=DIM, distance=models.Distance.DOT)})
        c.upsert(name, [models.PointStruct(id=i, vector={"a": v, "b": v}, payload={"i": i})
                        for i, v in enumerate(vecs)])
        flt = models.Filter(must=[models.FieldCondition(key="i",
                                                        range=models.Range(gte=30))])
        c.set_payload(name, {"s": "x", "n": None}, points=[1, 2, 3])
        c.set_payload(name, {"deep": 1}, points=[1], key="obj")
        c.set_payload(name, {"f": True}, points=flt)
        c.overwrite_payload(name, {"o": [1, 2]}, points=[4])
        c.delete_payload(name, ["i"], points=[5, 6])
        c.clear_payload(name, points_selector=[7])
        c.update_vectors(name, [models.PointVectors(id=8, vector={"a": vecs[0]})])
        c.delete_vectors(name, ["b"], points=[9, 10])
        c.delete(name, points_selector=[11])
        c.delete(name, points_selector=models.FilterSelector(filter=models.Filter(
            must=[models.HasIdCondition(has_id=[12, 13])])))
        res = c.batch_update_points(name, [
            models.UpsertOperation(upsert=models.PointsList(points=[
                models.PointStruct(id=500, vector={"a": vecs[1]}, payload={"b": 1})])),
            models.SetPayloadOperation(set_payload=models.SetPayload(
                payload={"bp": 1}, points=[14])),
            models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(
                payload={"op": 1}, points=[15])),
            models.DeletePayloadOperation(delete_payload=models.DeletePayload(
                keys=["i"], points=[16])),
            models.ClearPayloadOperation(clear_payload=models.PointIdsList(points=[17])),
            models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(
                points=[models.PointVectors(id=18, vector={"b": vecs[2]})])),
            models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(
                points=[19], vector=["a"])),
            models.DeleteOperation(delete=models.PointIdsList(points=[20])),
        ])
        assert [x.status for x in res] == [models.UpdateStatus.COMPLETED] * 8
        info = c.create_payload_index(name, "i", models.PayloadSchemaType.INTEGER)
        assert info.status == models.UpdateStatus.COMPLETED
        c.create_payload_index(name, "s", models.KeywordIndexParams(
            type=models.KeywordIndexType.KEYWORD, is_tenant=True))
        c.create_payload_index(name, "d.k", models.PayloadSchemaType.KEYWORD)
        c.delete_payload_index(name, "d.k")
    a, b = (r.scroll(n, limit=1000, with_vectors=True)[0] for n in names)
    assert len(a) == len(b) == 37
    _same_points(a, b, ranked=False)
    assert [p.id for p in a] == [p.id for p in b]
    sa, sb = (r.get_collection(n).payload_schema for n in names)
    assert sa == sb and set(sa) == {"i", "s"}
    for n in names:
        r.delete_collection(n)


def test_wait_false_acknowledges(clients: Any) -> None:
    g, r = clients
    name = _name("ack")
    r.create_collection(name, vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.DOT))
    res = g.upsert(name, [models.PointStruct(id=1, vector=[0.5] * DIM)], wait=False)
    assert res.status == models.UpdateStatus.ACKNOWLEDGED
    res = g.upsert(name, [models.PointStruct(id=2, vector=[0.5] * DIM)], wait=True)
    assert res.status == models.UpdateStatus.COMPLETED
    assert r.count(name).count == 2
    r.delete_collection(name)


# ---- reads -------------------------------------------------------------------------------------


def test_query_points_match_rest(clients: Any, corpus: str) -> None:
    g, r = clients
    rng = np.random.default_rng(4)
    q = rng.normal(size=DIM).tolist()
    flt = models.Filter(must=[models.FieldCondition(key="city",
                                                    match=models.MatchAny(any=["paris", "oslo"]))],
                        must_not=[models.FieldCondition(key="n", range=models.Range(lt=5))])
    cases: list[dict[str, Any]] = [
        {"query": q, "using": "a", "limit": 7, "with_payload": True, "with_vectors": True},
        {"query": q, "using": "b", "limit": 5, "offset": 3, "query_filter": flt,
         "with_payload": ["city", "nested"], "with_vectors": ["b"]},
        {"query": _sparse(rng), "using": "s", "limit": 6,
         "with_payload": models.PayloadSelectorExclude(exclude=["tags"])},
        {"query": 3, "using": "a", "limit": 4, "score_threshold": 0.0},
        {"query": models.FusionQuery(fusion=models.Fusion.RRF), "limit": 8, "prefetch": [
            models.Prefetch(query=q, using="a", limit=20),
            models.Prefetch(query=_sparse(rng), using="s", limit=20, filter=flt)]},
        {"query": models.RrfQuery(rrf=models.Rrf(k=10)), "limit": 5, "prefetch": [
            models.Prefetch(query=q, using="a", limit=15),
            models.Prefetch(query=q, using="b", limit=15)]},
        {"query": models.FormulaQuery(formula=models.SumExpression(sum=[
            "$score", models.MultExpression(mult=[0.1, "n"])]), defaults={"n": 0}),
         "prefetch": models.Prefetch(query=q, using="a", limit=30), "limit": 6},
        {"query": models.NearestQuery(nearest=q, mmr=models.Mmr(diversity=0.5,
                                                                candidates_limit=30)),
         "using": "a", "limit": 5},
        {"query": models.RecommendQuery(recommend=models.RecommendInput(
            positive=[1, 2], negative=[q], strategy=models.RecommendStrategy.BEST_SCORE)),
         "using": "a", "limit": 6},
        {"query": models.DiscoverQuery(discover=models.DiscoverInput(
            target=q, context=[models.ContextPair(positive=3, negative=4)])),
         "using": "a", "limit": 6},
        {"query": models.ContextQuery(context=[models.ContextPair(positive=3, negative=4)]),
         "using": "a", "limit": 6},
        {"query": models.OrderByQuery(order_by=models.OrderBy(
            key="n", direction=models.Direction.DESC)), "limit": 10, "with_payload": True},
        {"query_filter": flt, "limit": 10, "with_payload": True},
    ]
    for kw in cases:
        got = g.query_points(corpus, **kw).points
        want = r.query_points(corpus, **kw).points
        assert got, kw
        _same_points(got, want, ranked="order_by" not in repr(kw.get("query")))
        if isinstance(kw.get("query"), models.OrderByQuery):
            assert [p.payload["n"] for p in got] == [p.payload["n"] for p in want]
            assert [p.order_value for p in got] == [p.order_value for p in want]
    # batch and groups
    reqs = [models.QueryRequest(**{k.replace("query_filter", "filter").replace(
        "with_vectors", "with_vector"): v for k, v in kw.items()}) for kw in cases[:4]]
    for got_b, want_b in zip(g.query_batch_points(corpus, reqs),
                             r.query_batch_points(corpus, reqs), strict=True):
        _same_points(got_b.points, want_b.points)
    for kw in ({"group_by": "city", "limit": 3, "group_size": 2},
               {"group_by": "n", "limit": 4, "group_size": 3, "with_lookup": corpus}):
        gg = g.query_points_groups(corpus, query=q, using="a", with_payload=True, **kw).groups
        rg = r.query_points_groups(corpus, query=q, using="a", with_payload=True, **kw).groups
        assert [x.id for x in gg] == [x.id for x in rg]
        for x, y in zip(gg, rg, strict=True):
            _same_points(x.hits, y.hits)
            assert (x.lookup is None) == (y.lookup is None)
            if x.lookup is not None:
                assert x.lookup.id == y.lookup.id and x.lookup.payload == y.lookup.payload


def test_scroll_count_retrieve_facet_matrix_match_rest(clients: Any, corpus: str) -> None:
    g, r = clients
    flt = models.Filter(should=[models.FieldCondition(key="city",
                                                      match=models.MatchValue(value="rome")),
                                models.FieldCondition(key="ok", match=models.MatchValue(
                                    value=False))])
    for kw in ({"limit": 17, "with_vectors": True}, {"limit": 9, "offset": 40},
               {"scroll_filter": flt, "limit": 50, "with_payload": ["n"]},
               {"limit": 12, "order_by": models.OrderBy(key="n", start_from=10)}):
        gp, gn = g.scroll(corpus, **kw)
        rp, rn = r.scroll(corpus, **kw)
        assert [p.id for p in gp] == [p.id for p in rp]
        assert gn == rn
        _same_points(gp, rp, ranked=False)
        assert [p.order_value for p in gp] == [p.order_value for p in rp]
    assert g.count(corpus, flt).count == r.count(corpus, flt).count > 0
    assert g.count(corpus).count == N
    ids = [1, 2, str(uuid.UUID(int=1)), 999_999]
    _same_points(g.retrieve(corpus, ids, with_vectors=["s"]),
                 r.retrieve(corpus, ids, with_vectors=["s"]), ranked=False)
    for kw in ({"key": "city"}, {"key": "n", "limit": 5, "facet_filter": flt},
               {"key": "city", "exact": True, "limit": 2}):
        assert g.facet(corpus, **kw).hits == r.facet(corpus, **kw).hits
    # every point sampled (the sample is random otherwise): the same pairs, in any order
    for kw in ({"sample": 500, "limit": 3, "using": "a"}, {"sample": 500, "limit": 2,
                                                           "using": "b", "query_filter": flt}):
        gp2, rp2 = g.search_matrix_pairs(corpus, **kw), r.search_matrix_pairs(corpus, **kw)
        assert len(gp2.pairs) == len(rp2.pairs) > 0
        assert {(p.a, p.b, round(p.score, 4)) for p in gp2.pairs} == \
            {(p.a, p.b, round(p.score, 4)) for p in rp2.pairs}
        go, ro = g.search_matrix_offsets(corpus, **kw), r.search_matrix_offsets(corpus, **kw)
        assert len(go.ids) == len(ro.ids) and set(go.ids) == set(ro.ids)
        assert {(go.ids[i], go.ids[j], round(s, 4)) for i, j, s in
                zip(go.offsets_row, go.offsets_col, go.scores, strict=True)} == \
            {(ro.ids[i], ro.ids[j], round(s, 4)) for i, j, s in
             zip(ro.offsets_row, ro.offsets_col, ro.scores, strict=True)}


def _rest(server: Any, path: str, body: dict[str, Any]) -> Any:
    import httpx

    resp = httpx.post(server.url + path, json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]


def _scored(result: Any) -> list[models.ScoredPoint]:
    return [models.ScoredPoint.model_validate(p) for p in result]


def _from_grpc(points: Any) -> list[models.ScoredPoint]:
    return [GrpcToRest.convert_scored_point(p) for p in points]


def _pid(i: int) -> pb.PointId:
    return pb.PointId(num=i)


def test_legacy_search_recommend_discover_match_rest(clients: Any, corpus: str,
                                                     server: Any) -> None:
    """The RPCs qdrant-client no longer wraps: the raw stub against the REST body."""
    g, _ = clients
    stub = g.grpc_points
    rng = np.random.default_rng(5)
    q = rng.normal(size=DIM).astype(np.float32).tolist()
    path = f"/collections/{corpus}/points"
    flt = pb.Filter(must=[pb.Condition(field=pb.FieldCondition(
        key="city", match=pb.Match(keyword="berlin")))])
    wp = pb.WithPayloadSelector(enable=True)
    s1 = pb.SearchPoints(collection_name=corpus, vector=q, vector_name="a", limit=6,
                                 with_payload=wp)
    s2 = pb.SearchPoints(collection_name=corpus, vector=q, vector_name="b", limit=4,
                                 filter=flt, offset=1)
    b1 = {"vector": {"name": "a", "vector": q}, "limit": 6, "with_payload": True}
    b2 = {"vector": {"name": "b", "vector": q}, "limit": 4, "offset": 1,
          "filter": {"must": [{"key": "city", "match": {"value": "berlin"}}]}}
    _same_points(_from_grpc(stub.Search(s1).result), _scored(_rest(server, path + "/search",
                                                                     b1)))
    batch = stub.SearchBatch(pb.SearchBatchPoints(collection_name=corpus,
                                                          search_points=[s1, s2]))
    want = _rest(server, path + "/search/batch", {"searches": [b1, b2]})
    for got_b, want_b in zip(batch.result, want, strict=True):
        _same_points(_from_grpc(got_b.result), _scored(want_b))
    sg = stub.SearchGroups(pb.SearchPointGroups(
        collection_name=corpus, vector=q, vector_name="a", limit=3, group_size=2,
        group_by="city", with_payload=wp))
    want = _rest(server, path + "/search/groups", {**b1, "limit": 3, "group_size": 2,
                                                   "group_by": "city"})["groups"]
    assert [x.id.string_value for x in sg.result.groups] == [x["id"] for x in want]
    r1 = pb.RecommendPoints(
        collection_name=corpus, positive=[_pid(1), _pid(2)], negative=[_pid(3)], limit=5,
        using="a", with_payload=wp,
        positive_vectors=[pb.Vector(dense=pb.DenseVector(data=q))])
    rb1 = {"positive": [1, 2, q], "negative": [3], "limit": 5, "using": "a",
           "with_payload": True}
    r2 = pb.RecommendPoints(collection_name=corpus, positive=[_pid(6)], limit=4,
                                    using="b", strategy=pb.BestScore, filter=flt)
    rb2 = {"positive": [6], "limit": 4, "using": "b", "strategy": "best_score",
           "filter": b2["filter"]}
    _same_points(_from_grpc(stub.Recommend(r1).result),
                 _scored(_rest(server, path + "/recommend", rb1)))
    rbatch = stub.RecommendBatch(pb.RecommendBatchPoints(collection_name=corpus,
                                                                 recommend_points=[r1, r2]))
    for got_b, want_b in zip(rbatch.result, _rest(server, path + "/recommend/batch",
                                                  {"searches": [rb1, rb2]}), strict=True):
        _same_points(_from_grpc(got_b.result), _scored(want_b))
    rg = stub.RecommendGroups(pb.RecommendPointGroups(
        collection_name=corpus, positive=[_pid(1)], limit=3, group_size=2, group_by="city",
        using="a"))
    want = _rest(server, path + "/recommend/groups", {"positive": [1], "limit": 3,
                                                      "group_size": 2, "group_by": "city",
                                                      "using": "a"})["groups"]
    assert [x.id.string_value for x in rg.result.groups] == [x["id"] for x in want]
    ex = pb.VectorExample
    # the target in the deprecated dense form (`Vector.data`) older clients send
    d1 = pb.DiscoverPoints(
        collection_name=corpus, using="a", limit=5,
        target=pb.TargetVector(single=ex(vector=pb.Vector(data=q))),
        context=[pb.ContextExamplePair(positive=ex(id=_pid(3)),
                                               negative=ex(id=_pid(4)))])
    db1 = {"using": "a", "limit": 5, "target": q,
           "context": [{"positive": 3, "negative": 4}]}
    _same_points(_from_grpc(stub.Discover(d1).result),
                 _scored(_rest(server, path + "/discover", db1)))
    dbatch = stub.DiscoverBatch(pb.DiscoverBatchPoints(collection_name=corpus,
                                                               discover_points=[d1]))
    _same_points(_from_grpc(dbatch.result[0].result),
                 _scored(_rest(server, path + "/discover/batch", {"searches": [db1]})[0]))


# ---- refusals ----------------------------------------------------------------------------------


def _rest_error(server: Any, method: str, path: str, body: Any) -> str:
    import httpx

    resp = httpx.request(method, server.url + path, json=body, timeout=30)
    assert resp.status_code in (400, 404, 422), resp.text
    return str(resp.json()["status"]["error"])


def _grpc_error(call: Any, *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value  # type: ignore[return-value]


def test_errors_carry_rest_messages_and_store_nothing(clients: Any, server: Any) -> None:
    g, r = clients
    stub = g.grpc_points
    name = _name("err")
    r.create_collection(name, vectors_config={"a": models.VectorParams(
        size=DIM, distance=models.Distance.COSINE)})
    path = f"/collections/{name}/points"

    def upsert(vec: list[float], vname: str = "a", coll: str = name) -> Any:
        v = pb.Vector(dense=pb.DenseVector(data=vec))
        return pb.UpsertPoints(collection_name=coll, wait=True, points=[
            pb.PointStruct(id=_pid(i), vectors=pb.Vectors(
                vectors=pb.NamedVectors(vectors={vname: v}))) for i in (1, 2)])

    cases = [
        (upsert([0.1] * (DIM - 1)), {"a": [0.1] * (DIM - 1)}, grpc.StatusCode.INVALID_ARGUMENT),
        (upsert([0.1] * (DIM - 1) + [math.nan]), None, grpc.StatusCode.INVALID_ARGUMENT),
        (upsert([0.1] * DIM, "zz"), {"zz": [0.1] * DIM}, grpc.StatusCode.INVALID_ARGUMENT),
        (upsert([0.1] * DIM, coll="g2_missing"), {"a": [0.1] * DIM},
         grpc.StatusCode.NOT_FOUND),
    ]
    for msg, rest_vec, code in cases:
        err = _grpc_error(stub.Upsert, msg)
        assert err.code() == code, err.details()
        if rest_vec is not None:
            want = _rest_error(server, "PUT", f"/collections/{msg.collection_name}/points",
                               {"points": [{"id": i, "vector": rest_vec} for i in (1, 2)]})
            assert err.details() == want
        else:
            assert "NaN" in err.details()
    # the same refusals on the default-vector fast path (a collection with no default vector)
    fast = pb.UpsertPoints(collection_name=name, points=[pb.PointStruct(
        id=_pid(1), vectors=pb.Vectors(vector=pb.Vector(
            dense=pb.DenseVector(data=[0.1] * DIM))))])
    err = _grpc_error(stub.Upsert, fast)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == _rest_error(server, "PUT", path,
                                        {"points": [{"id": 1, "vector": [0.1] * DIM}]})
    # a malformed filter: a geo radius REST refuses
    bad = pb.Filter(must=[pb.Condition(field=pb.FieldCondition(
        key="loc", geo_radius=pb.GeoRadius(
            center=pb.GeoPoint(lat=100.0, lon=0.0), radius=-1.0)))])
    err = _grpc_error(stub.Count, pb.CountPoints(collection_name=name, filter=bad))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == _rest_error(server, "POST", path + "/count", {"filter": {
        "must": [{"key": "loc", "geo_radius": {"center": {"lat": 100.0, "lon": 0.0},
                                               "radius": -1.0}}]}})
    # a condition with nothing set cannot be read at all
    err = _grpc_error(stub.Count, pb.CountPoints(
        collection_name=name, filter=pb.Filter(must=[pb.Condition()])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # a query on an unknown vector name, a query of the wrong size
    err = _grpc_error(lambda: g.query_points(name, [0.1] * DIM, using="zz"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == _rest_error(server, "POST", path + "/query",
                                        {"query": [0.1] * DIM, "using": "zz"})
    err = _grpc_error(lambda: g.query_points(name, [0.1] * 3, using="a"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == _rest_error(server, "POST", path + "/query",
                                        {"query": [0.1] * 3, "using": "a"})
    assert r.count(name).count == 0
    # vector names cannot be created or deleted
    for call, req in ((stub.CreateVectorName, pb.CreateVectorNameRequest(
            collection_name=name, vector_name="x")),
                      (stub.DeleteVectorName, pb.DeleteVectorNameRequest(
                          collection_name=name, vector_name="a"))):
        err = _grpc_error(call, req)
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        method = "PUT" if call is stub.CreateVectorName else "DELETE"
        assert err.details() == _rest_error(server, method, f"/collections/{name}/vectors/x",
                                            {})
    r.delete_collection(name)


def test_converters_roundtrip_payload_values() -> None:
    """Payload values through the direct converters keep their JSON types (int64 bounds,
    nested nulls, empty containers); the engine's records become the messages the client
    reads back as the same REST models."""
    from api.rpc.convert import fill_records, payload_json

    rec = {"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "version": 3, "score": 0.5,
           "payload": {"i": -(1 << 63), "u": 1 << 63, "f": 1.5, "b": False, "s": "é",
                       "n": None, "l": [1, [2, {}], []], "o": {"x": {"y": None}}},
           "vector": {"d": [0.25, 0.5], "m": [[1.0, 2.0], [3.0, 4.0]],
                      "s": {"indices": [1, 7], "values": [0.5, 0.25]}}}
    out = pb.SearchResponse()
    fill_records(out.result, [rec, {"id": 9, "score": 1.0, "version": 0, "vector": [1.0]}])
    back = _from_grpc(out.result)
    want = dict(rec["payload"], u=float(1 << 63))  # beyond int64: a double, as Qdrant
    assert back[0].payload == want and payload_json(out.result[0].payload) == want
    assert back[0].id == rec["id"] and back[0].score == 0.5 and back[0].version == 3
    assert back[0].vector == {"d": [0.25, 0.5], "m": [[1.0, 2.0], [3.0, 4.0]],
                              "s": models.SparseVector(indices=[1, 7], values=[0.5, 0.25])}
    assert back[1].id == 9 and back[1].vector == [1.0] and back[1].payload is None
    v = pb.Value()
    v.struct_value.SetInParent()
    assert payload_json({"e": v}) == {"e": {}}


def test_upsert_fast_form_is_what_the_write_parser_takes() -> None:
    """The messages qdrant-client sends for dense points take the numpy form, which the
    write parser accepts as it accepts the JSON form (same rows stored); anything else
    (sparse, multivector, mixed names, duplicate ids) takes the general form."""
    from qdrant_client.conversions.conversion import RestToGrpc

    from api.parse.writes import upsert_op
    from api.rpc.points_service import fast_upsert_body, upsert_body
    from engine.config import parse_create

    rng = np.random.default_rng(6)

    def msg(points: list[models.PointStruct]) -> Any:
        m = pb.UpsertPoints(collection_name="c",
                            points=[RestToGrpc.convert_point_struct(p) for p in points])
        return pb.UpsertPoints.FromString(m.SerializeToString())

    vecs = rng.normal(size=(5, DIM)).astype(np.float32)
    plain = msg([models.PointStruct(id=i, vector=vecs[i].tolist(), payload={"i": i})
                 for i in range(5)])
    body = fast_upsert_body(plain)
    assert body is not None and isinstance(body["batch"]["vectors"], np.ndarray)
    assert np.array_equal(body["batch"]["vectors"], vecs)
    cfg = parse_create({"vectors": {"size": DIM, "distance": "Cosine"}})
    fast_op, json_op = upsert_op(cfg, body), upsert_op(cfg, upsert_body(plain))
    assert fast_op.ids == json_op.ids and fast_op.payloads == json_op.payloads
    assert np.allclose(fast_op.vectors[""].values, json_op.vectors[""].values)
    named = msg([models.PointStruct(id=i, vector={"a": vecs[i].tolist(),
                                                  "b": vecs[i, :3].tolist()})
                 for i in range(5)])
    body = fast_upsert_body(named)
    assert body is not None and len(body["batch"]["vectors"]["b"]) == 5
    cfg = parse_create({"vectors": {"a": {"size": DIM, "distance": "Dot"},
                                    "b": {"size": 3, "distance": "Dot"}}})
    fast_op, json_op = upsert_op(cfg, body), upsert_op(cfg, upsert_body(named))
    for n in ("a", "b"):
        assert np.allclose(fast_op.vectors[n].values, json_op.vectors[n].values)
    for points in ([models.PointStruct(id=1, vector={"s": _sparse(rng)})],
                   [models.PointStruct(id=1, vector=[[1.0, 2.0]])],
                   [models.PointStruct(id=1, vector={"a": [1.0]}),
                    models.PointStruct(id=2, vector={"b": [1.0]})],
                   [models.PointStruct(id=1, vector=[1.0, 2.0]),
                    models.PointStruct(id=1, vector=[3.0, 4.0])],
                   [models.PointStruct(id=1, vector=[1.0, 2.0]),
                    models.PointStruct(id=2, vector=[3.0])]):
        assert fast_upsert_body(msg(points)) is None, points


def _rpc_count(server: Any, method: str, code: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    line = f'quiver_grpc_requests_total{{method="{method}",code="{code}"}} '
    return sum(float(x[len(line):]) for x in text.splitlines() if x.startswith(line))


def test_an_upsert_refused_on_the_fast_path_is_counted_once(clients: Any, server: Any) -> None:
    """The dense fast path's refusal is retried on the general form for REST's message: the
    metrics still count one call, with its final code."""
    g, r = clients
    name = _name("metric")
    r.create_collection(name, vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.DOT))
    msg = pb.UpsertPoints(collection_name=name, wait=True, points=[pb.PointStruct(
        id=_pid(1), vectors=pb.Vectors(vector=pb.Vector(
            dense=pb.DenseVector(data=[0.5] * (DIM + 1)))))])
    bad, good = (_rpc_count(server, "Upsert", c) for c in ("INVALID_ARGUMENT", "OK"))
    _grpc_error(g.grpc_points.Upsert, msg)
    assert _rpc_count(server, "Upsert", "INVALID_ARGUMENT") == bad + 1
    assert _rpc_count(server, "Upsert", "OK") == good
    g.upsert(name, [models.PointStruct(id=2, vector=[0.5] * DIM)], wait=True)
    assert _rpc_count(server, "Upsert", "OK") == good + 1
    assert _rpc_count(server, "Upsert", "INVALID_ARGUMENT") == bad + 1
