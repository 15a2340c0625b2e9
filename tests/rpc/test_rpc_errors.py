"""Bad input over gRPC: the right status code, Qdrant's message (REST's, for the same request
on the same server), nothing stored, and the server still serving afterwards.

Covers what a client library never sends: bytes that do not parse as the request message,
truncated messages, messages over `service.max_request_size_mb`, unknown methods; and what
it does send: wrong dimensions (in a batch with good points), NaN/inf, unknown collections,
bad filters in reads and in writes, bad ids.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import qdrant_client.grpc as pb
from google.protobuf.message import DecodeError
from server import QuiverServer

DIM = 4
StatusCode = grpc.StatusCode


@pytest.fixture(scope="module")
def channel(server: QuiverServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def points(channel: grpc.Channel) -> pb.PointsStub:
    return pb.PointsStub(channel)


@pytest.fixture
def coll(server: QuiverServer) -> Iterator[str]:
    """An empty collection (default Cosine vector of DIM) made over REST, dropped after."""
    name = f"g3err_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, timeout=30) as c:
        c.put(f"/collections/{name}",
              json={"vectors": {"size": DIM, "distance": "Cosine"}}).raise_for_status()
        yield name
        c.delete(f"/collections/{name}")


def _pid(i: int) -> pb.PointId:
    return pb.PointId(num=i)


def _point(pid: int, vec: list[float], **payload: int) -> pb.PointStruct:
    return pb.PointStruct(id=_pid(pid), vectors=pb.Vectors(vector=pb.Vector(
        dense=pb.DenseVector(data=vec))), payload={k: pb.Value(integer_value=v)
                                                   for k, v in payload.items()})


def _legacy_point(i: int, vec: list[float]) -> pb.PointStruct:
    """The deprecated `Vector.data` form older clients send."""
    return pb.PointStruct(id=_pid(i), vectors=pb.Vectors(vector=pb.Vector(data=vec)))


def _error(call: Callable[..., Any], req: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(req, timeout=30)
    return info.value  # type: ignore[return-value]


def _rest(srv: QuiverServer, method: str, path: str, body: Any = None) -> httpx.Response:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        return c.request(method, path, json=body)


def _rest_error(srv: QuiverServer, method: str, path: str, body: Any = None) -> str:
    r = _rest(srv, method, path, body)
    assert r.status_code >= 400, r.text
    return str(r.json()["status"]["error"])


def _stored(srv: QuiverServer, name: str) -> dict[Any, Any]:
    """Every point of `name` (id → payload), read over REST."""
    r = _rest(srv, "POST", f"/collections/{name}/points/scroll",
              {"limit": 10_000, "with_payload": True})
    assert r.status_code == 200, r.text
    return {p["id"]: p["payload"] for p in r.json()["result"]["points"]}


def _alive(srv: QuiverServer, channel: grpc.Channel, name: str) -> None:
    """Both transports still answer, and a good write still goes through."""
    reply = pb.QdrantStub(channel).HealthCheck(pb.HealthCheckRequest(), timeout=10)
    assert reply.title == "quiver - vector search engine"
    assert _rest(srv, "GET", "/readyz").status_code == 200
    before = len(_stored(srv, name))
    res = pb.PointsStub(channel).Upsert(pb.UpsertPoints(
        collection_name=name, wait=True, points=[_point(999_999, [1.0] * DIM)]), timeout=30)
    assert res.result.status == pb.UpdateStatus.Completed
    assert len(_stored(srv, name)) == before + 1


# ---- messages that do not parse ---------------------------------------------------------------


def _good_upsert(name: str) -> bytes:
    return pb.UpsertPoints(collection_name=name, wait=True, points=[
        _point(i, [0.5] * DIM, i=i) for i in range(20)]).SerializeToString()


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff",                       # a field tag whose varint never ends
    b"\x0a\xff\xff\xff\xff\x0f",               # a string field longer than the message
    b"\x0a\x03\xff\xfe\xfd",                   # collection_name that is not UTF-8
    b"\x12\x85\x01" + b"\x00" * 10,            # a points entry cut short
    "truncated",                               # a valid message cut in the middle
], ids=["wire-type", "overlong", "utf8", "short-points", "truncated"])
def test_unparsable_message_is_refused_and_server_keeps_serving(
        server: QuiverServer, channel: grpc.Channel, coll: str, garbage: Any) -> None:
    raw = _good_upsert(coll)[: len(_good_upsert(coll)) // 2] if garbage == "truncated" \
        else garbage
    with pytest.raises(DecodeError):
        pb.UpsertPoints.FromString(raw)  # the bytes really do not parse
    upsert = channel.unary_unary("/qdrant.Points/Upsert")  # raw bytes in, raw bytes out
    with pytest.raises(grpc.RpcError) as info:
        upsert(raw, timeout=30)
    err: grpc.RpcError = info.value  # type: ignore[assignment]
    # Qdrant (tonic's ProstCodec) answers INTERNAL for a message prost cannot decode; grpcio's
    # sync server INTERNAL too; never UNKNOWN, nor a dropped connection
    assert err.code() in (StatusCode.INVALID_ARGUMENT, StatusCode.INTERNAL), err.details()
    assert _stored(server, coll) == {}
    _alive(server, channel, coll)


def test_raw_bytes_of_a_good_message_are_served(server: QuiverServer, channel: grpc.Channel,
                                                coll: str) -> None:
    """The raw path itself works: the same bytes, uncut, are an upsert of 20 points."""
    out = channel.unary_unary("/qdrant.Points/Upsert")(_good_upsert(coll), timeout=30)
    assert pb.PointsOperationResponse.FromString(out).result.status == \
        pb.UpdateStatus.Completed
    assert _stored(server, coll) == {i: {"i": i} for i in range(20)}


def test_unknown_method_is_unimplemented(server: QuiverServer, channel: grpc.Channel,
                                         coll: str) -> None:
    for method in ("/qdrant.Points/Nope", "/qdrant.Nope/Upsert"):
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(method)(_good_upsert(coll), timeout=30)
        assert info.value.code() == StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert _stored(server, coll) == {}
    _alive(server, channel, coll)


def test_message_over_the_request_size_limit(tmp_path: Path) -> None:
    """`service.max_request_size_mb` bounds gRPC messages as it bounds REST bodies."""
    srv = QuiverServer(tmp_path / "storage", grpc=True, env={
        "QUIVER__SERVICE__MAX_REQUEST_SIZE_MB": "1",
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    try:
        assert _rest(srv, "PUT", "/collections/big",
                     {"vectors": {"size": 256, "distance": "Dot"}}).status_code == 200
        big = pb.UpsertPoints(collection_name="big", wait=True, points=[
            _point(i, [0.25] * 256) for i in range(2000)])  # ~2 MB
        assert big.ByteSize() > 1 << 20
        with grpc.insecure_channel(srv.grpc_target) as ch:
            err = _error(pb.PointsStub(ch).Upsert, big)
            assert err.code() == StatusCode.RESOURCE_EXHAUSTED, err.details()
            assert _stored(srv, "big") == {}
            small = pb.UpsertPoints(collection_name="big", wait=True,
                                    points=[_point(i, [0.25] * 256) for i in range(100)])
            pb.PointsStub(ch).Upsert(small, timeout=30)
        assert len(_stored(srv, "big")) == 100
    finally:
        srv.stop()


# ---- wrong dimensions, NaN, bad ids: the whole batch is refused ---------------------------------


@pytest.mark.parametrize("form", ["dense", "legacy"])
def test_wrong_dimension_in_a_batch_stores_nothing(server: QuiverServer,
                                                   points: pb.PointsStub, channel: grpc.Channel,
                                                   coll: str, form: str) -> None:
    make = _point if form == "dense" else _legacy_point
    good = [make(i, [0.5] * DIM) for i in range(10)]
    for bad_vec, rest_vec in (([0.5] * (DIM + 1), [0.5] * (DIM + 1)),
                              ([0.5] * (DIM - 1), [0.5] * (DIM - 1))):
        req = pb.UpsertPoints(collection_name=coll, wait=True,
                              points=good + [make(10, bad_vec)])
        err = _error(points.Upsert, req)
        assert err.code() == StatusCode.INVALID_ARGUMENT, err.details()
        body = {"points": [{"id": i, "vector": [0.5] * DIM} for i in range(10)]
                + [{"id": 10, "vector": rest_vec}]}
        assert err.details() == _rest_error(server, "PUT", f"/collections/{coll}/points", body)
        assert "Vector dimension error: expected dim: 4" in err.details()
    # an empty vector
    err = _error(points.Upsert, pb.UpsertPoints(collection_name=coll, wait=True,
                                                points=good + [make(10, [])]))
    assert err.code() == StatusCode.INVALID_ARGUMENT, err.details()
    assert _stored(server, coll) == {}
    # update_vectors with the wrong size: the stored vector is kept
    points.Upsert(pb.UpsertPoints(collection_name=coll, wait=True,
                                  points=[make(1, [0.5] * DIM)]), timeout=30)
    err = _error(points.UpdateVectors, pb.UpdatePointVectors(
        collection_name=coll, wait=True, points=[pb.PointVectors(id=_pid(1), vectors=pb.Vectors(
            vector=pb.Vector(dense=pb.DenseVector(data=[1.0] * (DIM + 2)))))]))
    assert err.code() == StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details() == _rest_error(server, "PUT", f"/collections/{coll}/points/vectors",
                                        {"points": [{"id": 1, "vector": [1.0] * (DIM + 2)}]})
    got = _rest(server, "POST", f"/collections/{coll}/points",
                {"ids": [1], "with_vector": True}).json()["result"]
    assert got[0]["vector"] == pytest.approx([0.5] * DIM)  # unit length already
    # a query of the wrong size
    err = _error(points.Query, pb.QueryPoints(collection_name=coll, query=pb.Query(
        nearest=pb.VectorInput(dense=pb.DenseVector(data=[0.1] * (DIM + 3))))))
    assert err.code() == StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details() == _rest_error(server, "POST", f"/collections/{coll}/points/query",
                                        {"query": [0.1] * (DIM + 3)})
    _alive(server, channel, coll)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("form", ["dense", "legacy"])
def test_non_finite_vector_stores_nothing(server: QuiverServer, points: pb.PointsStub,
                                          coll: str, value: float, form: str) -> None:
    make = _point if form == "dense" else _legacy_point
    req = pb.UpsertPoints(collection_name=coll, wait=True, points=[
        make(i, [0.5] * DIM) for i in range(10)] + [make(10, [0.5, value, 0.5, 0.5])])
    err = _error(points.Upsert, req)
    assert err.code() == StatusCode.INVALID_ARGUMENT, err.details()
    # REST cannot carry NaN in JSON; its null is the same refusal, so the message is REST's
    # minus the "(null)" it adds for that spelling
    rest = _rest_error(server, "PUT", f"/collections/{coll}/points",
                       {"points": [{"id": 10, "vector": [0.5, None, 0.5, 0.5]}]})
    assert err.details() == rest.removesuffix(" (null)")
    assert _stored(server, coll) == {}


def test_bad_point_ids_store_nothing(server: QuiverServer, points: pb.PointsStub,
                                     coll: str) -> None:
    for pid in (pb.PointId(uuid="not-a-uuid"), pb.PointId()):
        req = pb.UpsertPoints(collection_name=coll, wait=True, points=[
            _point(1, [0.5] * DIM), pb.PointStruct(id=pid, vectors=pb.Vectors(
                vector=pb.Vector(dense=pb.DenseVector(data=[0.5] * DIM))))])
        err = _error(points.Upsert, req)
        assert err.code() == StatusCode.INVALID_ARGUMENT, err.details()
    assert _stored(server, coll) == {}


# ---- unknown collections ----------------------------------------------------------------------


def test_unknown_collection_is_not_found_with_qdrant_message(
        server: QuiverServer, channel: grpc.Channel) -> None:
    missing = f"g3_missing_{uuid.uuid4().hex[:6]}"
    p = pb.PointsStub(channel)
    ids = pb.PointsSelector(points=pb.PointsIdsList(ids=[_pid(1)]))
    q = pb.Query(nearest=pb.VectorInput(dense=pb.DenseVector(data=[0.1] * DIM)))
    base = f"/collections/{missing}"
    cases: list[tuple[Callable[..., Any], Any, str, str, Any]] = [
        (p.Upsert, pb.UpsertPoints(collection_name=missing, wait=True,
                                   points=[_point(1, [0.1] * DIM)]),
         "PUT", base + "/points", {"points": [{"id": 1, "vector": [0.1] * DIM}]}),
        (p.Delete, pb.DeletePoints(collection_name=missing, wait=True, points=ids),
         "POST", base + "/points/delete", {"points": [1]}),
        (p.SetPayload, pb.SetPayloadPoints(collection_name=missing, wait=True,
                                           payload={"a": pb.Value(integer_value=1)},
                                           points_selector=ids),
         "POST", base + "/points/payload", {"payload": {"a": 1}, "points": [1]}),
        (p.Get, pb.GetPoints(collection_name=missing, ids=[_pid(1)]),
         "POST", base + "/points", {"ids": [1]}),
        (p.Query, pb.QueryPoints(collection_name=missing, query=q),
         "POST", base + "/points/query", {"query": [0.1] * DIM}),
        (p.Search, pb.SearchPoints(collection_name=missing, vector=[0.1] * DIM, limit=3),
         "POST", base + "/points/search", {"vector": [0.1] * DIM, "limit": 3}),
        (p.Count, pb.CountPoints(collection_name=missing), "POST", base + "/points/count", {}),
        (p.Scroll, pb.ScrollPoints(collection_name=missing), "POST", base + "/points/scroll", {}),
        (p.CreateFieldIndex, pb.CreateFieldIndexCollection(
            collection_name=missing, field_name="a", field_type=pb.FieldTypeKeyword, wait=True),
         "PUT", base + "/index", {"field_name": "a", "field_schema": "keyword"}),
        (pb.CollectionsStub(channel).Get, pb.GetCollectionInfoRequest(collection_name=missing),
         "GET", base, None),
        (pb.CollectionsStub(channel).Update, pb.UpdateCollection(collection_name=missing),
         "PATCH", base, {}),
        (pb.SnapshotsStub(channel).Create, pb.CreateSnapshotRequest(collection_name=missing),
         "POST", base + "/snapshots", None),
        (pb.SnapshotsStub(channel).List, pb.ListSnapshotsRequest(collection_name=missing),
         "GET", base + "/snapshots", None),
    ]
    for call, req, method, path, body in cases:
        err = _error(call, req)
        rest = _rest(server, method, path, body)
        assert rest.status_code == 404, (path, rest.text)
        assert err.code() == StatusCode.NOT_FOUND, (type(req).__name__, err.details())
        assert err.details() == rest.json()["status"]["error"], type(req).__name__
        assert f"Collection `{missing}` doesn't exist!" in err.details()
    exists = pb.CollectionsStub(channel).CollectionExists(
        pb.CollectionExistsRequest(collection_name=missing), timeout=30)
    assert exists.result.exists is False
    assert _rest(server, "GET", base + "/exists").json()["result"]["exists"] is False


# ---- bad filters, in reads and in writes -------------------------------------------------------


def _seed(points: pb.PointsStub, name: str) -> None:
    points.Upsert(pb.UpsertPoints(collection_name=name, wait=True, points=[
        _point(i, [1.0, float(i), 0.0, 1.0], n=i) for i in range(1, 11)]), timeout=30)


BAD_FILTERS: list[tuple[str, pb.Filter, dict[str, Any] | None]] = [
    ("geo-radius", pb.Filter(must=[pb.Condition(field=pb.FieldCondition(
        key="loc", geo_radius=pb.GeoRadius(center=pb.GeoPoint(lat=100.0, lon=0.0),
                                           radius=-1.0)))]),
     {"must": [{"key": "loc", "geo_radius": {"center": {"lat": 100.0, "lon": 0.0},
                                             "radius": -1.0}}]}),
    ("empty-condition", pb.Filter(must=[pb.Condition()]), None),
    ("empty-field-condition", pb.Filter(must=[pb.Condition(field=pb.FieldCondition(
        key="n"))]), {"must": [{"key": "n"}]}),
]


@pytest.mark.parametrize("flt,rest_filter", [(f, r) for _, f, r in BAD_FILTERS],
                         ids=[n for n, _, _ in BAD_FILTERS])
def test_bad_filter_refused_in_reads_and_writes(server: QuiverServer, points: pb.PointsStub,
                                                coll: str, flt: pb.Filter,
                                                rest_filter: dict[str, Any] | None) -> None:
    _seed(points, coll)
    before = _stored(server, coll)
    path = f"/collections/{coll}/points"
    q = pb.Query(nearest=pb.VectorInput(dense=pb.DenseVector(data=[1.0] * DIM)))
    calls: list[tuple[Callable[..., Any], Any, str, str, dict[str, Any]]] = [
        (points.Count, pb.CountPoints(collection_name=coll, filter=flt),
         "POST", path + "/count", {}),
        (points.Scroll, pb.ScrollPoints(collection_name=coll, filter=flt),
         "POST", path + "/scroll", {}),
        (points.Query, pb.QueryPoints(collection_name=coll, query=q, filter=flt),
         "POST", path + "/query", {"query": [1.0] * DIM}),
        (points.Search, pb.SearchPoints(collection_name=coll, vector=[1.0] * DIM, limit=3,
                                        filter=flt),
         "POST", path + "/search", {"vector": [1.0] * DIM, "limit": 3}),
        (points.Delete, pb.DeletePoints(collection_name=coll, wait=True,
                                        points=pb.PointsSelector(filter=flt)),
         "POST", path + "/delete", {}),
        (points.SetPayload, pb.SetPayloadPoints(
            collection_name=coll, wait=True, payload={"x": pb.Value(integer_value=1)},
            points_selector=pb.PointsSelector(filter=flt)),
         "POST", path + "/payload", {"payload": {"x": 1}}),
        (points.ClearPayload, pb.ClearPayloadPoints(collection_name=coll, wait=True,
                                                    points=pb.PointsSelector(filter=flt)),
         "POST", path + "/payload/clear", {}),
    ]
    for call, req, method, rest_path, body in calls:
        err = _error(call, req)
        assert err.code() == StatusCode.INVALID_ARGUMENT, (type(req).__name__, err.details())
        if rest_filter is not None:
            key = "filter"
            if rest_path.endswith(("/delete", "/payload/clear")):
                body = {"filter": rest_filter}
            else:
                body = dict(body, **{key: rest_filter})
            assert err.details() == _rest_error(server, method, rest_path, body), \
                type(req).__name__
    assert _stored(server, coll) == before  # nothing deleted, set or cleared
