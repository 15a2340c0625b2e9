"""qdrant.Snapshots over gRPC, checked against REST's snapshot lists on one real server.

The seed document (Qdrant's "Snapshots" page) shows each snapshot operation over gRPC in
Rust, Go, Java and C#; every example sets the same fields: the collection name
(create_snapshot / list_snapshots), the collection and snapshot names (delete_snapshot), the
snapshot name (delete_full_snapshot), nothing (create / list full snapshots). Each test below
calls that RPC with the raw stub and exactly those fields, then compares what it answered or
did with what REST lists (names, sizes, checksums, creation times).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.grpc import snapshots_service_pb2 as pb
from qdrant_client.grpc import snapshots_service_pb2_grpc


@pytest.fixture(scope="module")
def stub(server: Any) -> Iterator[snapshots_service_pb2_grpc.SnapshotsStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield snapshots_service_pb2_grpc.SnapshotsStub(channel)


@pytest.fixture
def collection(server: Any, collection_name: str) -> Iterator[str]:
    """A collection with random points (its snapshots are removed with it)."""
    r = QdrantClient(url=server.url, prefer_grpc=False, timeout=30)
    r.create_collection(collection_name, vectors_config=models.VectorParams(
        size=6, distance=models.Distance.COSINE))
    rng = np.random.default_rng(14)
    r.upsert(collection_name, [models.PointStruct(id=i, vector=rng.normal(size=6).tolist(),
                                                  payload={"i": i}) for i in range(40)],
             wait=True)
    yield collection_name
    for snap in r.list_snapshots(collection_name):
        r.delete_snapshot(collection_name, snap.name)
    r.delete_collection(collection_name)
    r.close()


def _rest(http: httpx.Client, path: str) -> list[dict[str, Any]]:
    resp = http.get(path)
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]


def _as_rest(d: pb.SnapshotDescription) -> dict[str, Any]:
    """A SnapshotDescription in REST's JSON form (Timestamp → the same instant, UTC)."""
    out: dict[str, Any] = {"name": d.name, "size": d.size,
                           "creation_time": d.creation_time.ToDatetime(tzinfo=UTC)}
    if d.HasField("checksum"):
        out["checksum"] = d.checksum
    return out


def _parsed(snap: dict[str, Any]) -> dict[str, Any]:
    """REST's description with its ISO creation_time as an aware datetime (Qdrant: UTC)."""
    t = datetime.fromisoformat(snap["creation_time"])
    return {**snap, "creation_time": t if t.tzinfo else t.replace(tzinfo=UTC)}


def _same(got: list[pb.SnapshotDescription], want: list[dict[str, Any]]) -> None:
    assert sorted((_as_rest(d) for d in got), key=lambda s: s["name"]) == \
        sorted((_parsed(s) for s in want), key=lambda s: s["name"])


# ---- collection snapshots ----------------------------------------------------------------------


def test_create_snapshot_example(stub: Any, http: httpx.Client, collection: str) -> None:
    """create_snapshot("{collection_name}") (Rust, Java, C#, Go)."""
    resp = stub.Create(pb.CreateSnapshotRequest(collection_name=collection))
    listed = _rest(http, f"/collections/{collection}/snapshots")
    assert [s["name"] for s in listed] == [resp.snapshot_description.name]
    _same([resp.snapshot_description], listed)
    assert len(resp.snapshot_description.checksum) == 64 and resp.snapshot_description.size > 0
    assert resp.time > 0


def test_list_snapshots_example(stub: Any, http: httpx.Client, collection: str) -> None:
    """list_snapshots("{collection_name}") (Rust, Java, C#, Go)."""
    assert list(stub.List(pb.ListSnapshotsRequest(
        collection_name=collection)).snapshot_descriptions) == []
    for _ in range(2):
        assert http.post(f"/collections/{collection}/snapshots").status_code == 200
    resp = stub.List(pb.ListSnapshotsRequest(collection_name=collection))
    listed = _rest(http, f"/collections/{collection}/snapshots")
    assert len(listed) == 2
    _same(list(resp.snapshot_descriptions), listed)
    assert resp.time > 0


def test_delete_snapshot_example(stub: Any, http: httpx.Client, collection: str) -> None:
    """delete_snapshot("{collection_name}", "{snapshot_name}") (Rust, Java, C#, Go)."""
    kept = http.post(f"/collections/{collection}/snapshots").json()["result"]
    gone = http.post(f"/collections/{collection}/snapshots").json()["result"]
    resp = stub.Delete(pb.DeleteSnapshotRequest(collection_name=collection,
                                                snapshot_name=gone["name"]))
    assert resp.time > 0
    assert _rest(http, f"/collections/{collection}/snapshots") == [kept]


def test_snapshot_errors_are_rests(stub: Any, http: httpx.Client, collection: str) -> None:
    missing = collection + "_missing"
    for call, req, method, path in (
            (stub.Create, pb.CreateSnapshotRequest(collection_name=missing), "POST",
             f"/collections/{missing}/snapshots"),
            (stub.List, pb.ListSnapshotsRequest(collection_name=missing), "GET",
             f"/collections/{missing}/snapshots"),
            (stub.Delete, pb.DeleteSnapshotRequest(collection_name=collection,
                                                   snapshot_name="nope.snapshot"),
             "DELETE", f"/collections/{collection}/snapshots/nope.snapshot"),
            (stub.DeleteFull, pb.DeleteFullSnapshotRequest(snapshot_name="nope.snapshot"),
             "DELETE", "/snapshots/nope.snapshot")):
        rest = http.request(method, path)
        assert rest.status_code == 404
        with pytest.raises(grpc.RpcError) as exc:
            call(req)
        assert (exc.value.code(), exc.value.details()) == \
            (grpc.StatusCode.NOT_FOUND, rest.json()["status"]["error"])


def test_qdrant_client_over_grpc_reads_what_rest_lists(server: Any, collection: str) -> None:
    """qdrant-client's own gRPC snapshot calls (GrpcToRest on our messages) give the very
    models its REST calls give: creation_time survives Timestamp → ISO."""
    g = QdrantClient(host="127.0.0.1", port=server.port, grpc_port=server.grpc_port,
                     prefer_grpc=True, timeout=30)
    r = QdrantClient(host="127.0.0.1", port=server.port, prefer_grpc=False, timeout=30)
    try:
        made = g.create_snapshot(collection)
        assert made is not None
        assert g.list_snapshots(collection) == r.list_snapshots(collection) == [made]
        assert g.delete_snapshot(collection, made.name) is True
        assert r.list_snapshots(collection) == []
    finally:
        g.close()
        r.close()


# ---- full storage snapshots --------------------------------------------------------------------


@pytest.fixture
def no_full_snapshots(http: httpx.Client) -> Iterator[None]:
    for snap in _rest(http, "/snapshots"):
        http.delete(f"/snapshots/{snap['name']}")
    yield
    for snap in _rest(http, "/snapshots"):
        http.delete(f"/snapshots/{snap['name']}")


def test_create_full_snapshot_example(stub: Any, http: httpx.Client, collection: str,
                                      no_full_snapshots: None) -> None:
    """create_full_snapshot() (Rust, Java, C#, Go)."""
    resp = stub.CreateFull(pb.CreateFullSnapshotRequest())
    listed = _rest(http, "/snapshots")
    _same([resp.snapshot_description], listed)
    assert resp.snapshot_description.name.startswith("full-snapshot-")
    assert resp.time > 0


def test_list_full_snapshots_example(stub: Any, http: httpx.Client, collection: str,
                                     no_full_snapshots: None) -> None:
    """list_full_snapshots() (Rust, Java, C#, Go)."""
    assert list(stub.ListFull(pb.ListFullSnapshotsRequest()).snapshot_descriptions) == []
    made = http.post("/snapshots").json()["result"]
    resp = stub.ListFull(pb.ListFullSnapshotsRequest())
    listed = _rest(http, "/snapshots")
    assert [s["name"] for s in listed] == [made["name"]]
    _same(list(resp.snapshot_descriptions), listed)


def test_delete_full_snapshot_example(stub: Any, http: httpx.Client, collection: str,
                                      no_full_snapshots: None) -> None:
    """delete_full_snapshot("{snapshot_name}") (Rust, Java, C#, Go)."""
    made = http.post("/snapshots").json()["result"]
    resp = stub.DeleteFull(pb.DeleteFullSnapshotRequest(snapshot_name=made["name"]))
    assert resp.time > 0
    assert _rest(http, "/snapshots") == []
