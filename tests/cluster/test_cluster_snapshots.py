"""Collection snapshots of a cluster collection (api/cluster/collection_snapshots.py): one
archive holding every shard at one consistent cut, restorable onto a single node (the standard
upload route) and into the cluster with another shard count, with identical answers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking, paired
from validating_http import ValidatingClient

N, DIM = 240, 8
COLL = "csnap"


def _points(seed: int, n: int) -> list[models.PointStruct]:
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    return [models.PointStruct(id=k * 3 + 1, vector=nrng.standard_normal(DIM).tolist(),
                               payload={"g": rng.randrange(5), "t": rng.choice("xyz")})
            for k in range(n)]


@pytest.fixture(scope="module")
def cluster(cluster_server: Any) -> Iterator[tuple[QdrantClient, ValidatingClient]]:
    remote = validating_qdrant_client(cluster_server.url, timeout=120)
    remote.create_collection(COLL, shard_number=3, vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.COSINE))
    remote.create_payload_index(COLL, "t", models.PayloadSchemaType.KEYWORD)
    pts = _points(7, N)
    remote.upsert(COLL, pts[:150], wait=True)
    remote.upsert(COLL, pts[150:], wait=True)
    remote.delete(COLL, models.PointIdsList(points=[p.id for p in pts[:9]]), wait=True)
    with ValidatingClient(base_url=cluster_server.url, timeout=120) as http:
        yield remote, http
    remote.close()


@pytest.fixture(scope="module")
def archive(cluster: tuple[QdrantClient, ValidatingClient]) -> tuple[str, bytes]:
    """(snapshot name, bytes) of one cluster snapshot of COLL; its checksum checked."""
    remote, http = cluster
    desc = remote.create_snapshot(COLL, wait=True)
    assert desc is not None
    assert desc.name in [s.name for s in remote.list_snapshots(COLL)]
    got = http.get(f"/collections/{COLL}/snapshots/{desc.name}")
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == desc.checksum
    assert len(got.content) == desc.size
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        first = tar.next()
        assert first is not None and first.name == "manifest.json"
        src = tar.extractfile(first)
        assert src is not None
        manifest = json.loads(src.read())
    shards = manifest["cluster"]["shards"]
    assert manifest["cluster"]["shard_number"] == 3
    assert [s["shard_id"] for s in shards] == [0, 1, 2]
    assert manifest["seq"] == max(s["seq"] for s in shards)
    assert shards[-1]["segments"][1] == len(manifest["segments"])
    return desc.name, got.content


def _upload(http: httpx.Client, name: str, data: bytes, **query: str) -> httpx.Response:
    return http.post(f"/collections/{name}/snapshots/upload",
                     params={"wait": "true", **query},
                     files={"snapshot": ("cluster.snapshot", data)})


def _all(c: QdrantClient, name: str) -> list[models.Record]:
    pts, _ = c.scroll(name, limit=10_000, with_payload=True, with_vectors=True)
    return pts


def _same_answers(got: QdrantClient, got_name: str, want: QdrantClient, want_name: str
                  ) -> None:
    assert got.count(got_name, exact=True).count == want.count(want_name, exact=True).count
    a, b = _all(got, got_name), _all(want, want_name)
    assert [p.id for p in a] == [p.id for p in b]
    for x, y in zip(a, b, strict=True):
        assert x.payload == y.payload
        assert np.allclose(x.vector, y.vector, rtol=1e-6)
    nrng = np.random.default_rng(3)
    for k in range(6):
        q = nrng.standard_normal(DIM).tolist()
        flt = models.Filter(must=[models.FieldCondition(
            key="t", match=models.MatchValue(value="xyz"[k % 3]))]) if k % 2 else None
        kw = {"query": q, "limit": 15, "query_filter": flt, "with_payload": True,
              "search_params": models.SearchParams(exact=True)}
        r1 = got.query_points(got_name, **kw).points
        r2 = want.query_points(want_name, **kw).points
        assert_same_ranking(r1, r2)
        for x, y in paired(r1, r2):
            assert x.payload == y.payload


def test_cluster_snapshot_restores_on_a_single_node(
        cluster: tuple[QdrantClient, ValidatingClient], archive: tuple[str, bytes],
        server: Any) -> None:
    remote, _ = cluster
    single = validating_qdrant_client(server.url, timeout=60)
    with ValidatingClient(base_url=server.url, timeout=60) as http:
        name = "csnap_single"
        got = _upload(http, name, archive[1])
        assert got.status_code == 200, got.text
        assert got.json()["result"] is True
    try:
        _same_answers(single, name, remote, COLL)
    finally:
        single.delete_collection(name)
        single.close()


@pytest.mark.slow
def test_cluster_snapshot_reshards_into_another_shard_count(
        cluster: tuple[QdrantClient, ValidatingClient], archive: tuple[str, bytes],
        cluster_server: Any) -> None:
    remote, http = cluster
    # into an existing 2-shard collection: it keeps its layout
    remote.create_collection("csnap2", shard_number=2, vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.COSINE))
    remote.update_collection_aliases([models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name="csnap2", alias_name="csnap2_alias"))])
    got = _upload(http, "csnap2", archive[1])
    assert got.status_code == 200, got.text
    assert remote.get_collection("csnap2").config.params.shard_number == 2
    # its aliases are kept, as a single node keeps them
    assert [a.alias_name for a in remote.get_collection_aliases("csnap2").aliases] == \
        ["csnap2_alias"]
    assert remote.count("csnap2_alias", exact=True).count == remote.count(COLL, exact=True).count
    assert http.get("/collections/csnap2/cluster").json()["result"]["shard_count"] == 2
    _same_answers(remote, "csnap2", remote, COLL)
    # a new collection by location (file:// inside the snapshots dir): the archive's 3 shards
    snaps = cluster_server.env["QUIVER__STORAGE__SNAPSHOTS_PATH"]
    assert remote.recover_snapshot("csnap3", f"file://{snaps}/{COLL}/{archive[0]}",
                                   wait=True)
    assert http.get("/collections/csnap3/cluster").json()["result"]["shard_count"] == 3
    _same_answers(remote, "csnap3", remote, COLL)
    for c in ("csnap2", "csnap3"):
        remote.delete_collection(c)


def test_bad_input_changes_nothing(cluster: tuple[QdrantClient, ValidatingClient],
                                   archive: tuple[str, bytes]) -> None:
    remote, http = cluster
    assert http.post("/collections/nope/snapshots").status_code == 404
    assert http.get("/collections/nope/snapshots").status_code == 404
    assert http.get(f"/collections/{COLL}/snapshots/missing.snapshot").status_code == 404
    before = remote.count(COLL, exact=True).count
    data = bytearray(archive[1])
    data[len(data) // 2] ^= 0xFF  # a member's bytes no longer match its sha256
    for bad in (bytes(data), b"not a tar archive at all", archive[1][: len(data) // 3]):
        for target in (COLL, "csnap_bad"):
            got = _upload(http, target, bad)
            assert got.status_code == 400, got.text
            assert got.json()["status"]["error"]
    assert not remote.collection_exists("csnap_bad")
    # a recovery's hidden collections take names no user may create or recover into
    hidden = ".recovering-csnap"
    assert http.put(f"/collections/{hidden}", json={"vectors": {
        "size": DIM, "distance": "Cosine"}}).status_code == 400
    assert _upload(http, hidden, archive[1]).status_code == 400
    assert hidden not in [c.name for c in remote.get_collections().collections]
    assert remote.count(COLL, exact=True).count == before
    assert http.get(f"/collections/{COLL}/cluster").json()["result"]["shard_count"] == 3
    got = _upload(http, COLL, archive[1], checksum="0" * 64)
    assert got.status_code == 400
    # wait=false answers 202 at once; the snapshot appears; deleting it leaves the collection
    known = {s.name for s in remote.list_snapshots(COLL)}
    got = http.post(f"/collections/{COLL}/snapshots", params={"wait": "false"})
    assert got.status_code == 202, got.text
    deadline = time.monotonic() + 60
    while not (new := {s.name for s in remote.list_snapshots(COLL)} - known):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for name in new:
        assert remote.delete_snapshot(COLL, name, wait=True)
    assert not {s.name for s in remote.list_snapshots(COLL)} - known
    assert http.post("/snapshots").status_code == 400  # full snapshots: not in cluster mode
    assert remote.count(COLL, exact=True).count == before


@pytest.mark.slow
def test_snapshot_is_one_consistent_cut(cluster: tuple[QdrantClient, ValidatingClient],
                                        cluster_server: Any) -> None:
    """Two writers upsert increasing ids (spread over the shards) while the snapshot is
    taken: in the recovered collection each writer's ids are a prefix of what it wrote, and
    hold everything acknowledged before the snapshot started."""
    remote, http = cluster
    name = "csnap_cut"
    remote.create_collection(name, shard_number=3, vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.COSINE))
    acked = {0: 0, 1: 0}
    stop = threading.Event()

    def writer(w: int) -> None:
        c = QdrantClient(url=cluster_server.url, timeout=60)
        nrng = np.random.default_rng(w)
        k = 0
        while not stop.is_set():
            c.upsert(name, [models.PointStruct(id=w * 1_000_000 + k,
                                               vector=nrng.standard_normal(DIM).tolist())],
                     wait=True)
            k += 1
            acked[w] = k
        c.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while min(acked.values()) < 10:  # a writer that failed stops counting: not forever
            assert time.monotonic() < deadline and all(t.is_alive() for t in threads)
            time.sleep(0.02)
        before = dict(acked)
        desc = remote.create_snapshot(name, wait=True)
        after = dict(acked)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert desc is not None
    data = http.get(f"/collections/{name}/snapshots/{desc.name}").content
    got = _upload(http, name + "_r", data)
    assert got.status_code == 200, got.text
    ids = [int(p.id) for p in _all(remote, name + "_r")]
    for w in (0, 1):
        mine = sorted(i - w * 1_000_000 for i in ids if i // 1_000_000 == w)
        assert mine == list(range(len(mine))), f"writer {w}: not a prefix"
        assert before[w] <= len(mine) <= after[w] + 1
    for c in (name, name + "_r"):
        remote.delete_collection(c)


def test_replica_drops_an_archive_whose_caller_gave_up(tmp_path: Any) -> None:
    """A shard archive asked for under a tag whose call timed out on the front end (its path
    never known there) is removed by the replica: written already, or once it is."""
    from api.cluster.shard import ShardReplica
    from api.settings import load_settings
    from engine.errors import ServiceError

    rep = ShardReplica(load_settings(env={}), str(tmp_path / "replica"))
    try:
        params, q = {"collection_name": "c"}, {"wait": "true"}
        assert "result" in rep.call("PUT", "/collections/{collection_name}", params, q,
                                    {"vectors": {"size": DIM, "distance": "Dot"}})
        pts = [p.model_dump() for p in _points(1, 20)]
        assert "result" in rep.call("PUT", "/collections/{collection_name}/points", params,
                                    q, {"points": pts})
        tmp = rep.app.state.snapshots.tmp
        rep.drop_archive("early")  # before the archive is written: removed when it is
        with pytest.raises(ServiceError):
            rep.snapshot_archive("c", "early")
        arc = rep.snapshot_archive("c", "late")
        assert os.path.exists(arc["path"])
        rep.drop_archive("late")  # after it was written: removed now
        assert not [f for f in os.listdir(tmp) if f.endswith(".transfer")]
        assert rep.dropped == set()
    finally:
        rep.close()


def test_replica_archive_holds_the_frozen_state_while_writes_go_on(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`freeze_archive` fixes the cut; writes made after it (upserts, a new vector for an old
    point, payload changes, deletes) are accepted and applied, and `write_frozen` then writes
    exactly the frozen state. The frozen state holds the snapshot gate until written, dropped
    or expired."""
    from api.cluster import shard
    from api.cluster.shard import ShardReplica
    from api.settings import load_settings
    from engine.errors import ServiceError
    from engine.indexing import snapshot_gate

    rep = ShardReplica(load_settings(env={}), str(tmp_path / "replica"))
    C_, P_ = "/collections/{collection_name}", "/collections/{collection_name}/points"

    def call(method: str, template: str, body: Any, coll: str = "c") -> Any:
        out = rep.call(method, template, {"collection_name": coll}, {"wait": "true"}, body)
        assert "result" in out, out
        return out["result"]

    def points(coll: str) -> list[Any]:
        got = call("POST", P_ + "/scroll", {"limit": 1000, "with_payload": True,
                                            "with_vector": True}, coll)
        return sorted(got["points"], key=lambda p: p["id"])

    try:
        call("PUT", C_, {"vectors": {"size": DIM, "distance": "Dot"}})
        pts = [p.model_dump() for p in _points(1, 40)]
        call("PUT", P_, {"points": pts[:30]})
        frozen_points = points("c")
        froze = rep.freeze_archive("c", "cut")
        assert snapshot_gate.busy()
        later = [p.model_dump() for p in _points(2, 3)]  # new vectors for three old ids
        call("PUT", P_, {"points": pts[30:] + later})
        call("POST", P_ + "/payload", {"payload": {"g": 99}, "points": [pts[3]["id"]]})
        call("POST", P_ + "/delete", {"points": [pts[5]["id"], pts[6]["id"]]})
        now = points("c")
        assert now != frozen_points and len(now) == 38  # the writes were applied
        arc = rep.write_frozen("cut")
        assert not snapshot_gate.busy()
        assert arc["seq"] == froze["seq"] < rep.last_seq("c")
        assert arc["size"] == froze["size"] == os.path.getsize(arc["path"])
        with open(arc["path"], "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == arc["checksum"]
        assert "result" in rep.recover_archive("r", arc["path"], arc["checksum"])
        assert points("r") == frozen_points  # exactly the frozen state
        with pytest.raises(ServiceError):
            rep.write_frozen("cut")  # written once: nothing frozen under that tag now

        rep.freeze_archive("c", "unwanted")
        assert snapshot_gate.busy()
        rep.drop_archive("unwanted")  # frozen, never written: released
        assert not snapshot_gate.busy() and rep.frozen == {} and rep.dropped == set()
        with pytest.raises(ServiceError):
            rep.write_frozen("unwanted")

        monkeypatch.setattr(shard, "FROZEN_TTL_S", 0.2)
        rep.freeze_archive("c", "forgotten")  # its caller never asks for the write
        deadline = time.monotonic() + 30
        while snapshot_gate.busy():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert rep.frozen == {}
        assert not [f for f in os.listdir(rep.app.state.snapshots.tmp)
                    if ".transfer" in f]
    finally:
        rep.close()
