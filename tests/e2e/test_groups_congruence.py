"""Grouped search through the real server against qdrant-client's local mode:
POST /points/query/groups (query_points_groups: nearest, filters, score_threshold,
with_lookup, prefetch + fusion) and the legacy /points/search/groups and
/points/recommend/groups (through httpx; compared with the equivalent query/groups call).
Random data with keyword and integer keys, arrays (a point in several groups), missing keys
and values that are no group id (bool: the point joins no group).

Prefetch limits: the server multiplies them by group_size, local mode lifts them to every
point; the cases use prefetch limits that reach every point, where both agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models

N, DIM = 400, 8
NAME, OTHER = "groups_main", "groups_lookup"
WORDS = [f"w{i}" for i in range(12)]


def _payload(rng: np.random.Generator, i: int) -> dict[str, Any]:
    p: dict[str, Any] = {"i": i}
    r = rng.random()
    if r < 0.6:
        p["kw"] = str(rng.choice(WORDS))
    elif r < 0.8:
        p["kw"] = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 4)))]
    elif r < 0.85:
        p["kw"] = []
    r = rng.random()
    if r < 0.6:
        p["num"] = int(rng.integers(0, 15))
    elif r < 0.75:
        p["num"] = [int(x) for x in rng.integers(0, 15, size=2)]
    elif r < 0.8:
        p["num"] = bool(rng.random() < 0.5)  # no group id: the point joins no group
    elif r < 0.85:
        p["num"] = [3, True]
    p["meta"] = {"doc": f"d{int(rng.integers(0, 8))}"}
    return p


@pytest.fixture(scope="module")
def clients(server: Any) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    rng = np.random.default_rng(13)
    pts = [models.PointStruct(id=i, vector={"a": rng.standard_normal(DIM).tolist(),
                                            "b": rng.standard_normal(DIM).tolist()},
                              payload=_payload(rng, i)) for i in range(N)]
    other = [models.PointStruct(id=i, vector=rng.standard_normal(4).tolist(),
                                payload={"name": f"group {i}"}) for i in range(0, 15, 2)]
    for c in (remote, local):
        for name in (NAME, OTHER):
            if c.collection_exists(name):
                c.delete_collection(name)
        c.create_collection(NAME, vectors_config={
            "a": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            "b": models.VectorParams(size=DIM, distance=models.Distance.EUCLID)})
        c.upsert(NAME, pts[: N // 2], wait=True)
        c.upsert(NAME, pts[N // 2:], wait=True)
        c.create_collection(OTHER, vectors_config=models.VectorParams(
            size=4, distance=models.Distance.DOT))
        c.upsert(OTHER, other, wait=True)
    yield remote, local
    remote.close()
    local.close()


def _hit_key(h: Any) -> tuple[Any, Any, Any]:
    return h.id, h.payload, h.vector


def assert_same_groups(got: list[Any], want: list[Any], tie: float = 1e-5) -> None:
    """Group ids, order and hits (ids, scores, payloads, vectors) agree. Where scores tie
    (within `tie`), which tied point comes first is open: then groups compare by scores."""
    assert len(got) == len(want), ([g.id for g in got], [g.id for g in want])
    scores = sorted({round(h.score, 9) for g in want for h in g.hits})
    ties = any(b - a <= tie for a, b in zip(scores, scores[1:], strict=False))
    for g, w in zip(got, want, strict=True):
        assert [h.score for h in g.hits] == pytest.approx([h.score for h in w.hits],
                                                          rel=1e-4, abs=1e-5)
        if ties:
            continue
        assert g.id == w.id and type(g.id) is type(w.id)
        assert [h.id for h in g.hits] == [h.id for h in w.hits], (g.id, g.hits, w.hits)
        assert [h.payload for h in g.hits] == [h.payload for h in w.hits]
        for hg, hw in zip(g.hits, w.hits, strict=True):
            if isinstance(hw.vector, dict):
                assert set(hg.vector) == set(hw.vector)
                for k in hw.vector:
                    assert hg.vector[k] == pytest.approx(hw.vector[k], rel=1e-5, abs=1e-6)
            else:
                assert hg.vector == hw.vector
        assert g.lookup == w.lookup


def _vec(rng: np.random.Generator) -> list[float]:
    return rng.standard_normal(DIM).tolist()


def _cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    flt = models.Filter(must=[models.FieldCondition(key="i", range=models.Range(gte=100))])
    pf = [models.Prefetch(query=_vec(rng), using="a", limit=N),
          models.Prefetch(query=_vec(rng), using="b", limit=N)]
    # fusion scores depend on each prefetch's candidates: the server drops points without the
    # key from them (the root's `is_empty` filter propagates), local mode does not; the same
    # filter given explicitly makes both see the same candidates
    has = {k: models.Filter(must_not=[models.IsEmptyCondition(
        is_empty=models.PayloadField(key=k))]) for k in ("kw", "num")}
    return [
        {"group_by": "kw", "query": _vec(rng), "using": "a"},
        {"group_by": "kw", "query": _vec(rng), "using": "a", "limit": 5, "group_size": 1},
        {"group_by": "kw", "query": _vec(rng), "using": "b", "limit": 20, "group_size": 10},
        {"group_by": "num", "query": _vec(rng), "using": "a", "limit": 4, "group_size": 2},
        {"group_by": "num", "query": _vec(rng), "using": "b", "limit": 15, "group_size": 50},
        {"group_by": "num", "query": _vec(rng), "using": "a", "query_filter": flt,
         "with_payload": ["num", "kw"], "with_vectors": ["b"]},
        {"group_by": "kw", "query": _vec(rng), "using": "a", "score_threshold": 0.3,
         "group_size": 4},
        {"group_by": "num", "query": _vec(rng), "using": "a", "with_lookup": OTHER},
        {"group_by": "num", "query": _vec(rng), "using": "b", "limit": 6,
         "with_lookup": models.WithLookup(collection=OTHER, with_payload=False,
                                          with_vectors=True)},
        {"group_by": "meta.doc", "query": _vec(rng), "using": "a", "group_size": 5,
         "with_payload": False},
        {"group_by": "kw", "prefetch": pf, "query": models.FusionQuery(
            fusion=models.Fusion.DBSF), "group_size": 2, "limit": 6, "query_filter": has["kw"]},
        {"group_by": "num", "prefetch": pf, "query": models.FusionQuery(
            fusion=models.Fusion.RRF), "group_size": 3, "query_filter": has["num"]},
        {"group_by": "kw", "prefetch": pf[:1], "query": _vec(rng), "using": "b",
         "group_size": 2, "query_filter": flt},
        {"group_by": "kw", "query": 7, "using": "a", "group_size": 2},
        {"group_by": "num", "query": 11, "using": "b", "limit": 15, "group_size": 40},
        {"group_by": "num", "query": _vec(rng), "using": "a", "limit": 100, "group_size": 100},
    ]


def test_query_groups_congruence(clients: tuple[QdrantClient, QdrantClient]) -> None:
    remote, local = clients
    rng = np.random.default_rng(5)
    for n, case in enumerate(_cases(rng)):
        got = remote.query_points_groups(NAME, **case).groups
        want = local.query_points_groups(NAME, **case).groups
        try:
            assert_same_groups(got, want)
        except AssertionError as e:
            raise AssertionError(f"case {n}: {case}") from e


def test_groups_fill_beyond_first_round(clients: tuple[QdrantClient, QdrantClient]) -> None:
    """A rare value: its group fills only when the candidates grow past the first round."""
    remote, local = clients
    rng = np.random.default_rng(8)
    for _ in range(5):
        q = _vec(rng)
        case = {"group_by": "kw", "query": q, "using": "a", "limit": 12, "group_size": 6}
        got = remote.query_points_groups(NAME, **case).groups
        want = local.query_points_groups(NAME, **case).groups
        assert_same_groups(got, want)
        assert len(got) == 12


def test_legacy_group_endpoints(clients: tuple[QdrantClient, QdrantClient],
                                http: Any) -> None:
    _, local = clients
    rng = np.random.default_rng(9)
    q = _vec(rng)
    r = http.post(f"/collections/{NAME}/points/search/groups", json={
        "vector": {"name": "a", "vector": q}, "group_by": "kw", "group_size": 2, "limit": 5,
        "with_payload": True, "filter": {"must": [{"key": "i", "range": {"lt": 300}}]}})
    assert r.status_code == 200, r.text
    got = models.GroupsResult(**r.json()["result"]).groups
    want = local.query_points_groups(
        NAME, query=q, using="a", group_by="kw", group_size=2, limit=5,
        query_filter=models.Filter(must=[models.FieldCondition(
            key="i", range=models.Range(lt=300))])).groups
    assert_same_groups(got, want)

    r = http.post(f"/collections/{NAME}/points/recommend/groups", json={
        "positive": [1, 2], "negative": [3], "using": "a", "group_by": "num",
        "group_size": 3, "limit": 4, "with_lookup": OTHER})
    assert r.status_code == 200, r.text
    got = models.GroupsResult(**r.json()["result"]).groups
    want = local.query_points_groups(
        NAME, query=models.RecommendQuery(recommend=models.RecommendInput(
            positive=[1, 2], negative=[3])), using="a", group_by="num", group_size=3,
        limit=4, with_lookup=OTHER, with_payload=False).groups
    assert_same_groups(got, want)


@pytest.mark.parametrize(("body", "status"), [
    ({"query": [0.0] * DIM, "using": "a"}, 400),  # no group_by
    ({"query": [0.0] * DIM, "using": "a", "group_by": 3}, 400),
    ({"query": [0.0] * DIM, "using": "a", "group_by": ""}, 400),
    ({"query": [0.0] * DIM, "using": "a", "group_by": "kw", "group_size": 0}, 400),
    ({"query": [0.0] * DIM, "using": "a", "group_by": "kw", "limit": 0}, 400),
    ({"query": [0.0] * DIM, "using": "a", "group_by": "kw", "with_lookup": "nope"}, 404),
    ({"query": [0.0] * 3, "using": "a", "group_by": "kw"}, 400),
])
def test_query_groups_bad_input(clients: Any, http: Any, body: dict[str, Any],
                                status: int) -> None:
    r = http.post(f"/collections/{NAME}/points/query/groups", json=body)
    assert r.status_code == status, r.text
    assert r.json()["status"]["error"]


def test_legacy_groups_bad_input(clients: Any, http: Any) -> None:
    for path, body in [
        ("search/groups", {"vector": {"name": "a", "vector": [0.0] * DIM},
                           "group_by": "kw", "limit": 3}),  # group_size is required
        ("search/groups", {"group_by": "kw", "group_size": 1, "limit": 3}),  # no vector
        ("recommend/groups", {"positive": [1], "using": "a", "group_size": 1,
                              "limit": 3}),  # no group_by
    ]:
        r = http.post(f"/collections/{NAME}/points/{path}", json=body)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["status"]["error"]
