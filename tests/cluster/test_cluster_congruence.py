"""A 3-shard × 2-replica collection on a three-node Ray cluster answers qdrant-client's
workflow exactly as a single node holding the same points (QdrantClient(":memory:") as the
oracle, random data): top-k with offsets and filters, batches, groups, scroll pages, counts,
retrieve, facets, writes by id and by filter. Then a replica actor is killed: it is marked Dead
and reads and writes go on with the survivors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking

N, DIM = 240, 8
NAME = "sharded"
COLORS = ["red", "green", "blue", "cyan", "pink"]


@pytest.fixture(scope="module")
def clients(cluster_server: Any) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    remote = validating_qdrant_client(cluster_server.url, timeout=120)
    local = QdrantClient(":memory:")
    rng = np.random.default_rng(17)
    ids: list[Any] = list(range(N - 20)) + [
        str(__import__("uuid").UUID(int=int(x))) for x in rng.integers(1, 1 << 62, size=20)]
    pts = [models.PointStruct(id=pid, vector=rng.standard_normal(DIM).tolist(),
                              payload={"color": str(rng.choice(COLORS)),
                                       "n": int(rng.integers(0, 50))})
           for pid in ids]
    for c in (remote, local):
        c.create_collection(NAME, vectors_config=models.VectorParams(
            size=DIM, distance=models.Distance.COSINE), shard_number=3, replication_factor=2)
        c.create_payload_index(NAME, "color", models.PayloadSchemaType.KEYWORD)
        c.create_payload_index(NAME, "n", models.PayloadSchemaType.INTEGER)
        for k in range(0, N, 80):
            c.upsert(NAME, pts[k:k + 80], wait=True)
    yield remote, local
    remote.close()


def _same_points(got: list[Any], want: list[Any]) -> None:
    assert [str(p.id) for p in got] == [str(p.id) for p in want]
    assert [p.payload for p in got] == [p.payload for p in want]


def test_collection_is_sharded(clients: tuple[QdrantClient, QdrantClient],
                               cluster_server: Any, ray_api: Any) -> None:
    remote, local = clients
    info = remote.get_collection(NAME)
    assert info.points_count == local.get_collection(NAME).points_count == N
    assert info.config.params.shard_number == 3
    assert info.config.params.replication_factor == 2
    assert [c.name for c in remote.get_collections().collections] == [NAME]
    ci = httpx.get(f"{cluster_server.url}/collections/{NAME}/cluster").json()["result"]
    assert ci["shard_count"] == 3
    assert sorted(r["shard_id"] for r in ci["remote_shards"]) == [0, 0, 1, 1, 2, 2]
    assert {r["state"] for r in ci["remote_shards"]} == {"Active"}
    for s in range(3):  # replicas of one shard on distinct nodes
        assert len({r["peer_id"] for r in ci["remote_shards"] if r["shard_id"] == s}) == 2
    # ... where they really run, not only as recorded: a soft node pin once let Ray start
    # both replicas of a shard on one node (api/cluster/placement.py)
    ns = cluster_server.env["QUIVER__CLUSTER__NAMESPACE"]
    meta = ray_api.get_actor("quiver-cluster-metadata", namespace=ns)
    shards = ray_api.get(meta.get.remote())["collections"][NAME]["shards"]
    for reps in shards.values():
        actual = [ray_api.get(ray_api.get_actor(r["actor"], namespace=ns).node_id.remote(),
                              timeout=60) for r in reps]
        assert actual == [r["node_id"] for r in reps] and len(set(actual)) == 2
    status = httpx.get(f"{cluster_server.url}/cluster").json()["result"]
    assert status["status"] == "enabled" and len(status["peers"]) == 3


def test_queries_match_a_single_node(clients: tuple[QdrantClient, QdrantClient]) -> None:
    remote, local = clients
    rng = np.random.default_rng(5)
    flt = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=10,
                                                                                lt=40))])
    for _ in range(4):
        q = rng.standard_normal(DIM).tolist()
        for kw in ({"limit": 10}, {"limit": 7, "offset": 9}, {"limit": 15, "query_filter": flt},
                   {"limit": 5, "score_threshold": 0.3}):
            got = remote.query_points(NAME, query=q, with_payload=True, **kw).points
            want = local.query_points(NAME, query=q, with_payload=True, **kw).points
            assert_same_ranking(got, want, offset=kw.get("offset", 0))
        reqs = [models.QueryRequest(query=q, limit=6, offset=o) for o in (0, 4)]
        for g, w, r in zip(remote.query_batch_points(NAME, reqs),
                           local.query_batch_points(NAME, reqs), reqs, strict=True):
            assert_same_ranking(g.points, w.points, offset=r.offset)
        got_g = remote.query_points_groups(NAME, query=q, group_by="color", limit=3,
                                           group_size=4).groups
        want_g = local.query_points_groups(NAME, query=q, group_by="color", limit=3,
                                           group_size=4).groups
        assert [g.id for g in got_g] == [g.id for g in want_g]
        for g, w in zip(got_g, want_g, strict=True):
            assert_same_ranking(g.hits, w.hits)


def test_scroll_count_retrieve_facet(clients: tuple[QdrantClient, QdrantClient]) -> None:
    remote, local = clients
    flt = models.Filter(must=[models.FieldCondition(key="color",
                                                    match=models.MatchValue(value="red"))])
    for f in (None, flt):
        offset_r = offset_l = None
        while True:  # page through everything: same pages, same next offsets
            got, offset_r = remote.scroll(NAME, limit=17, offset=offset_r, scroll_filter=f)
            want, offset_l = local.scroll(NAME, limit=17, offset=offset_l, scroll_filter=f)
            _same_points(got, want)
            assert str(offset_r) == str(offset_l)
            if offset_l is None:
                break
        assert remote.count(NAME, count_filter=f).count == local.count(NAME,
                                                                       count_filter=f).count
    got, _ = remote.scroll(NAME, limit=12, order_by=models.OrderBy(key="n", direction="desc"))
    want, _ = local.scroll(NAME, limit=12, order_by=models.OrderBy(key="n", direction="desc"))
    assert [p.payload["n"] for p in got] == [p.payload["n"] for p in want]
    some = [5, 3, 200, 999_999, 17, 5]
    _same_points(remote.retrieve(NAME, some), local.retrieve(NAME, some))
    got_f = remote.facet(NAME, "color", limit=3)
    want_f = local.facet(NAME, "color", limit=3)
    assert [(h.value, h.count) for h in got_f.hits] == [(h.value, h.count) for h in want_f.hits]


def test_writes_by_id_and_by_filter(clients: tuple[QdrantClient, QdrantClient]) -> None:
    remote, local = clients
    for c in (remote, local):
        c.delete(NAME, models.PointIdsList(points=[1, 2, 3, 150]), wait=True)
        c.set_payload(NAME, {"tag": "x"}, points=[10, 11, 12, 13], wait=True)
        c.delete(NAME, models.FilterSelector(filter=models.Filter(must=[
            models.FieldCondition(key="n", range=models.Range(lt=3))])), wait=True)
        c.overwrite_payload(NAME, {"color": "red", "n": 1}, points=[20, 21], wait=True)
    assert remote.count(NAME).count == local.count(NAME).count
    _same_points(remote.retrieve(NAME, list(range(25))), local.retrieve(NAME, list(range(25))))
    q = [0.1] * DIM
    assert_same_ranking(remote.query_points(NAME, query=q, limit=20).points,
                        local.query_points(NAME, query=q, limit=20).points)


def test_write_naming_a_missing_id_on_another_shard_stores_nothing(
        clients: tuple[QdrantClient, QdrantClient], cluster_server: Any, server: Any) -> None:
    """set_payload by ids, one (or two) of them missing and held by other shards than the
    existing ones: 404 with the single node's message (the first missing id in request order),
    and no shard's replica applied its part (every point as in the oracle, which is not sent
    the failing write)."""
    from api.cluster.split import shard_of

    remote, local = clients
    held_ids = [p.id for p in local.scroll(NAME, limit=N)[0] if isinstance(p.id, int)][:40]
    held_shards = shard_of(held_ids, 3).tolist()
    a = held_shards[0]
    on_a = [i for i, s in zip(held_ids, held_shards, strict=True) if s == a][:3]
    absent = [10_000 + k for k in range(200)]
    absent_shards = shard_of(absent, 3).tolist()
    by_shard = {s: [i for i, t in zip(absent, absent_shards, strict=True) if t == s]
                for s in range(3)}
    b, c = (s for s in range(3) if s != a)
    # request order puts shard c's missing id before shard b's: the split must not reorder
    bodies = [{"payload": {"tag": "never"}, "points": [*on_a, by_shard[b][0]]},
              {"payload": {"tag": "never"}, "points": [on_a[0], by_shard[c][0], on_a[1],
                                                       by_shard[b][0]]}]
    single = "c_missing_on_another_shard"
    with httpx.Client(base_url=server.url, timeout=60) as one, \
            httpx.Client(base_url=cluster_server.url, timeout=60) as many:
        one.delete(f"/collections/{single}")
        assert one.put(f"/collections/{single}", json={
            "vectors": {"size": DIM, "distance": "Cosine"}}).status_code == 200
        assert one.put(f"/collections/{single}/points?wait=true", json={"points": [
            {"id": i, "vector": [0.5] * DIM} for i in on_a]}).status_code == 200
        for body in bodies:
            for route in ("POST", "PUT"):  # set_payload and overwrite_payload
                want = one.request(route, f"/collections/{single}/points/payload?wait=true",
                                   json=body)
                got = many.request(route, f"/collections/{NAME}/points/payload?wait=true",
                                   json=body)
                assert want.status_code == got.status_code == 404
                assert got.json()["status"]["error"] == want.json()["status"]["error"]
        one.delete(f"/collections/{single}")
    for _ in range(2):  # reads rotate over the replicas: every one of them unchanged
        _same_points(remote.scroll(NAME, limit=N + 50)[0], local.scroll(NAME, limit=N + 50)[0])
    ci = httpx.get(f"{cluster_server.url}/collections/{NAME}/cluster").json()["result"]
    assert {r["state"] for r in ci["remote_shards"]} == {"Active"}  # no replica diverged


def test_bad_input_and_unbuilt_features_are_400(cluster_server: Any,
                                                clients: tuple[QdrantClient, QdrantClient]
                                                ) -> None:
    remote, _ = clients
    before = remote.count(NAME).count
    with httpx.Client(base_url=cluster_server.url, timeout=60) as h:
        r = h.put(f"/collections/{NAME}/points?wait=true", json={"points": [
            {"id": 900, "vector": [0.1] * DIM}, {"id": 901, "vector": [0.1] * (DIM + 1)}]})
        assert r.status_code == 400
        r = h.post(f"/collections/{NAME}/points/query/groups", json={"group_by": "color"})
        assert r.status_code == 400 and "cluster mode" in r.json()["status"]["error"]
        r = h.put("/collections/custom", json={"vectors": {"size": 2, "distance": "Dot"},
                                                "sharding_method": "custom"})
        assert r.status_code == 400 and "cluster mode" in r.json()["status"]["error"]
    assert remote.count(NAME).count == before  # nothing stored on any shard


def test_killed_replica_is_dead_and_service_goes_on(
        cluster_server: Any, ray_cluster: Any, clients: tuple[QdrantClient, QdrantClient]
        ) -> None:
    import ray

    remote, local = clients
    url = cluster_server.url
    ci = httpx.get(f"{url}/collections/{NAME}/cluster").json()["result"]
    namespace = cluster_server.env["QUIVER__CLUSTER__NAMESPACE"]
    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, namespace=namespace)
    meta = ray.get_actor("quiver-cluster-metadata", namespace=namespace)
    state = ray.get(meta.get.remote())
    victim = state["collections"][NAME]["shards"]["1"][0]
    ray.kill(ray.get_actor(victim["actor"], namespace=namespace))
    q = [0.3] * DIM
    for _ in range(3):  # reads go on (the dead one is found and skipped)
        assert_same_ranking(remote.query_points(NAME, query=q, limit=30).points,
                            local.query_points(NAME, query=q, limit=30).points)
    pts = [models.PointStruct(id=5000 + i, vector=np.full(DIM, i + 1.0).tolist(),
                              payload={"color": "pink", "n": i}) for i in range(30)]
    for c in (remote, local):
        c.upsert(NAME, pts, wait=True)
    assert remote.count(NAME).count == local.count(NAME).count
    ci = httpx.get(f"{url}/collections/{NAME}/cluster").json()["result"]
    dead = [r for r in ci["remote_shards"] if r["state"] == "Dead"]
    assert [r["shard_id"] for r in dead] == [1]
    assert remote.get_collection(NAME).status == models.CollectionStatus.YELLOW
    state = ray.get(meta.get.remote())  # persisted in the metadata actor
    assert [r["state"] for r in state["collections"][NAME]["shards"]["1"]] == ["Dead", "Active"]
