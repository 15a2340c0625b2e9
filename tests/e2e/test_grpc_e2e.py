"""The everyday qdrant-client workflow of test_e2e.py over gRPC (`prefer_grpc=True`, port
`service.grpc_port`), checked step by step against REST on the same server.

Two twin collections take the same writes, `gdocs` over gRPC and `rdocs` over REST; after each
step the same read over both transports (on either twin) gives equal models, ranked lists
compared tie-aware (tests/ranking.py). A restart at the end keeps what gRPC acknowledged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import qdrant_client.grpc as pb
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models
from qdrant_client.conversions.conversion import GrpcToRest
from ranking import assert_same_ranking
from server import QuiverServer

N, DIM = 500, 16
CITIES = ["Berlin", "London", "Paris", "Rome"]
G, R = "gdocs", "rdocs"  # written over gRPC / over REST


def _grpc(srv: QuiverServer) -> QdrantClient:
    return QdrantClient(url=srv.url, grpc_port=srv.grpc_port, prefer_grpc=True, timeout=30)


def _rest(srv: QuiverServer) -> QdrantClient:
    return validating_qdrant_client(srv.url, timeout=30)


def _same_ranked(got: list[Any], want: list[Any]) -> None:
    """Tie-aware ranking, then every hit's payload and vector equal to its twin's."""
    assert_same_ranking(got, want)
    by_id = {w.id: w for w in want}
    for p in got:
        if (w := by_id.get(p.id)) is not None:
            assert p.payload == w.payload
            if w.vector is None:
                assert p.vector is None
            else:
                assert np.allclose(p.vector, w.vector, rtol=1e-6, atol=1e-7)


def _same_records(got: list[Any], want: list[Any]) -> None:
    assert [p.id for p in got] == [p.id for p in want]
    for p, w in zip(got, want, strict=True):
        assert p.payload == w.payload
        if w.vector is None:
            assert p.vector is None
        else:
            assert np.allclose(p.vector, w.vector, rtol=1e-6, atol=1e-7)


def _info(c: QdrantClient, name: str) -> tuple[Any, ...]:
    i = c.get_collection(name)
    # qdrant-client turns gRPC's (always present) metadata map into {} even when empty,
    # where REST's absent field is None: the same empty metadata either way
    config = i.config.model_copy(update={"metadata": i.config.metadata or None})
    return (i.status, i.points_count, i.indexed_vectors_count, i.segments_count, config,
            i.payload_schema, i.optimizer_status, i.warnings, i.update_queue)


@pytest.fixture
def grpc_server(tmp_path: Path) -> Iterator[QuiverServer]:
    """A private server with gRPC (the test restarts it)."""
    srv = QuiverServer(tmp_path / "storage", grpc=True,
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    yield srv
    srv.stop()


def test_grpc_workflow_matches_rest_and_survives_restart(grpc_server: QuiverServer) -> None:
    srv = grpc_server
    g, r = _grpc(srv), _rest(srv)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    uid = str(uuid.UUID(int=12345))

    def both(write: Callable[[QdrantClient, str], Any]) -> None:
        """The same write on both twins, each over its transport: equal acknowledgements."""
        got, want = write(g, G), write(r, R)
        assert got == want

    # ---- collections ---------------------------------------------------------------------
    cfg = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    assert g.create_collection(G, vectors_config=cfg) is True
    assert r.create_collection(R, vectors_config=cfg) is True
    assert g.collection_exists(G) and g.collection_exists(R)
    assert not g.collection_exists("nope") and not r.collection_exists("nope")
    assert r.get_collection(G).config == r.get_collection(R).config
    assert g.get_collection(G).config.params.vectors == cfg
    assert g.get_collections() == r.get_collections()
    assert sorted(c.name for c in g.get_collections().collections) == [G, R]

    # ---- writes: upload_points (batched) and upsert --------------------------------------
    def upload(c: QdrantClient, name: str) -> None:
        c.upload_points(name, [
            models.PointStruct(id=i, vector=vectors[i].tolist(),
                               payload={"city": CITIES[i % 4], "n": i, "tags": [f"t{i % 7}"]})
            for i in range(N)], batch_size=64, wait=True)

    both(upload)
    both(lambda c, name: c.upsert(name, [models.PointStruct(
        id=uid, vector=vectors[0].tolist(), payload={"city": "Oslo"})], wait=True))
    assert g.count(G) == r.count(G) == r.count(R) == models.CountResult(count=N + 1)
    everything = list(range(N)) + [uid]
    _same_records(r.retrieve(G, everything, with_vectors=True),
                  r.retrieve(R, everything, with_vectors=True))
    _same_records(g.retrieve(G, everything, with_vectors=True),
                  r.retrieve(G, everything, with_vectors=True))
    assert _info(g, G) == _info(r, G)

    # ---- query_points: plain and filtered ------------------------------------------------
    berlin = models.Filter(must=[models.FieldCondition(
        key="city", match=models.MatchValue(value="Berlin"))])
    ranged = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=10,
                                                                                  lt=20))])
    for q in (3, 5, 77):
        for flt in (None, berlin, ranged):
            kw = dict(query=vectors[q].tolist(), query_filter=flt, limit=10,
                      with_payload=True, with_vectors=q == 5)
            got = g.query_points(G, **kw).points
            _same_ranked(got, r.query_points(G, **kw).points)
            _same_ranked(got, r.query_points(R, **kw).points)
            assert len(got) == 10
    hits = g.query_points(G, query=vectors[3].tolist(), limit=5).points
    assert hits[0].id == 3 and abs(hits[0].score - 1.0) < 1e-5
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert [h.id for h in hits] == np.argsort(-(unit @ unit[3]))[:5].tolist()
    hits = g.query_points(G, query=vectors[5].tolist(), query_filter=berlin, limit=10,
                          with_payload=True).points
    assert all(h.payload["city"] == "Berlin" for h in hits)

    # ---- search (the Search RPC, which qdrant-client no longer wraps) ---------------------
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for flt in (None, berlin):
            req = pb.SearchPoints(
                collection_name=G, vector=vectors[9].tolist(), limit=8,
                with_payload=pb.WithPayloadSelector(enable=True),
                filter=None if flt is None else pb.Filter(must=[pb.Condition(
                    field=pb.FieldCondition(key="city", match=pb.Match(keyword="Berlin")))]))
            got = [GrpcToRest.convert_scored_point(p) for p in g.grpc_points.Search(req).result]
            body = {"vector": vectors[9].tolist(), "limit": 8, "with_payload": True,
                    "filter": None if flt is None else flt.model_dump(exclude_none=True)}
            resp = http.post(f"/collections/{G}/points/search", json=body)
            assert resp.status_code == 200, resp.text
            want = [models.ScoredPoint(**p) for p in resp.json()["result"]]
            _same_ranked(got, want)

    # ---- scroll with pagination ----------------------------------------------------------
    seen: list[Any] = []
    g_off = r_off = None
    while True:
        g_page, g_off = g.scroll(G, limit=128, offset=g_off, with_payload=True)
        r_page, r_off = r.scroll(G, limit=128, offset=r_off, with_payload=True)
        assert g_page == r_page and g_off == r_off
        seen.extend(p.id for p in g_page)
        if g_off is None:
            break
    assert seen == everything
    assert g.scroll(G, scroll_filter=ranged, limit=5, offset=12) == \
        r.scroll(R, scroll_filter=ranged, limit=5, offset=12)

    # ---- count ---------------------------------------------------------------------------
    for flt in (None, berlin, ranged):
        assert g.count(G, count_filter=flt, exact=True) == \
            r.count(G, count_filter=flt, exact=True) == r.count(R, count_filter=flt, exact=True)
    assert g.count(G, count_filter=ranged).count == 10

    # ---- payload: set / overwrite / delete keys / clear ----------------------------------
    both(lambda c, name: c.set_payload(name, payload={"vip": True}, points=[1, 2, 3],
                                       wait=True))
    both(lambda c, name: c.set_payload(name, payload={"deep": 1}, key="meta",
                                       points=models.Filter(must=[models.HasIdCondition(
                                           has_id=[7])]), wait=True))
    both(lambda c, name: c.overwrite_payload(name, payload={"city": "Madrid"}, points=[4],
                                             wait=True))
    both(lambda c, name: c.delete_payload(name, keys=["tags"], points=[5], wait=True))
    both(lambda c, name: c.clear_payload(name, points_selector=[6], wait=True))
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    _same_records(g.retrieve(G, ids), r.retrieve(R, ids))
    _same_records(g.retrieve(G, ids), r.retrieve(G, ids))
    got = {p.id: p.payload for p in g.retrieve(G, ids=[1, 4, 5, 6])}
    assert got[1]["vip"] is True and got[4] == {"city": "Madrid"}
    assert "tags" not in got[5] and got[6] == {}

    # ---- deletes by id and by filter -----------------------------------------------------
    both(lambda c, name: c.delete(name, points_selector=models.PointIdsList(points=[10, 11]),
                                  wait=True))
    rome = models.FilterSelector(filter=models.Filter(must=[models.FieldCondition(
        key="city", match=models.MatchValue(value="Rome"))]))
    both(lambda c, name: c.delete(name, points_selector=rome, wait=True))
    remaining = N + 1 - 2 - sum(1 for i in range(N) if i % 4 == 3 and i not in (10, 11))
    assert g.count(G).count == r.count(G).count == r.count(R).count == remaining

    # ---- payload index -------------------------------------------------------------------
    both(lambda c, name: c.create_payload_index(name, "city", models.PayloadSchemaType.KEYWORD,
                                                wait=True))
    both(lambda c, name: c.create_payload_index(name, "n", models.PayloadSchemaType.INTEGER,
                                                wait=True))
    assert g.get_collection(G).payload_schema == r.get_collection(G).payload_schema \
        == r.get_collection(R).payload_schema
    assert g.get_collection(G).payload_schema["city"].data_type == "keyword"
    assert _info(g, G) == _info(r, G)
    both(lambda c, name: c.delete_payload_index(name, "n", wait=True))
    assert set(g.get_collection(G).payload_schema) == {"city"}

    # ---- aliases -------------------------------------------------------------------------
    assert g.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=G,
                                                                    alias_name="gprod"))])
    assert r.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=R,
                                                                    alias_name="rprod"))])
    assert g.get_aliases() == r.get_aliases()
    assert sorted(a.alias_name for a in g.get_aliases().aliases) == ["gprod", "rprod"]
    assert g.get_collection_aliases(G) == r.get_collection_aliases(G)
    assert [a.alias_name for a in g.get_collection_aliases(G).aliases] == ["gprod"]
    assert g.count("gprod").count == r.count("gprod").count == remaining
    g.update_collection_aliases(change_aliases_operations=[
        models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name="rprod",
                                                                    new_alias_name="rprod2"))])
    assert [a.alias_name for a in r.get_collection_aliases(R).aliases] == ["rprod2"]
    g.update_collection_aliases(change_aliases_operations=[
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="rprod2"))])
    assert g.get_aliases() == r.get_aliases()
    assert [a.alias_name for a in r.get_aliases().aliases] == ["gprod"]

    # ---- snapshots: create / list / delete -----------------------------------------------
    snap = g.create_snapshot(G, wait=True)
    assert snap is not None and snap.name.endswith(".snapshot") and snap.size > 0
    assert g.list_snapshots(G) == r.list_snapshots(G) == [snap]
    rsnap = r.create_snapshot(G, wait=True)
    assert rsnap is not None
    assert sorted(s.name for s in g.list_snapshots(G)) == sorted([snap.name, rsnap.name])
    assert sorted(g.list_snapshots(G), key=lambda s: s.name) == \
        sorted(r.list_snapshots(G), key=lambda s: s.name)
    assert g.delete_snapshot(G, snap.name, wait=True) is True
    assert g.delete_snapshot(G, rsnap.name, wait=True) is True
    assert g.list_snapshots(G) == r.list_snapshots(G) == []

    # ---- a scratch collection created and deleted over gRPC ------------------------------
    assert g.create_collection("scratch", vectors_config=cfg) is True
    assert r.collection_exists("scratch")
    assert g.delete_collection("scratch") is True
    assert not r.collection_exists("scratch")

    before = g.query_points(G, query=vectors[9].tolist(), limit=7, with_payload=True,
                            with_vectors=True).points
    g.close()

    # ---- restart: everything acknowledged over gRPC is still there -----------------------
    srv.restart()
    g = _grpc(srv)
    r = _rest(srv)
    assert g.count(G).count == g.count("gprod").count == r.count(G).count == remaining
    after = g.query_points(G, query=vectors[9].tolist(), limit=7, with_payload=True,
                           with_vectors=True).points
    _same_ranked(after, before)
    _same_ranked(after, r.query_points(R, query=vectors[9].tolist(), limit=7,
                                       with_payload=True, with_vectors=True).points)
    assert g.get_collection(G).payload_schema["city"].data_type == "keyword"
    assert g.retrieve(G, ids=[4])[0].payload == {"city": "Madrid"}
    assert _info(g, G) == _info(r, G)
    assert r.contract.failures == []
    g.close()
