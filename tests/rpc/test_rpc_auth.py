"""API keys, JWT RBAC and TLS over gRPC: the same keys, rights and certificate as REST.

Every refusal over gRPC carries the message REST gives for the same request and key (read
from the same server), with Qdrant's codes: no/unknown key → UNAUTHENTICATED, a key without
the right → PERMISSION_DENIED. `/qdrant.Qdrant/HealthCheck` needs no key (Qdrant's
src/tonic/auth.rs lets it, and `/grpc.health.v1.Health/Check`, bypass the check).
`service.grpc_port: 0` serves no gRPC at all.
"""

from __future__ import annotations

import socket
import ssl
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
import qdrant_client.grpc as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qdrant_client import QdrantClient, models
from server import QuiverServer, TlsServer, free_port, make_pki

from api.auth import BAD_KEY, NO_KEY, READ_ONLY
from api.settings import load_settings

KEY, RO = "manage-secret", "read-only-secret"
JWT_KEY = "jwt-signing-secret-" + "0123456789abcdef" * 3  # >= 64 bytes for HS512 quiet
COLL, OTHER = "docs", "other"
INSECURE = "Api key is used with an insecure connection"
StatusCode = grpc.StatusCode
Md = list[tuple[str, str]]


def _seed(srv: QuiverServer, key: str, names: tuple[str, ...] = (COLL,)) -> None:
    with httpx.Client(base_url=srv.url, headers={"api-key": key}, timeout=30) as c:
        for name in names:
            c.put(f"/collections/{name}",
                  json={"vectors": {"size": 4, "distance": "Dot"}}).raise_for_status()
            c.put(f"/collections/{name}/points?wait=true", json={"points": [
                {"id": i, "vector": [i, 1, 0, 0], "payload": {"i": i}} for i in range(20)]}
                  ).raise_for_status()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    """Both keys; one collection of 20 points and one snapshot of it."""
    base = tmp_path_factory.mktemp("rpcauth")
    srv = QuiverServer(base / "storage", grpc=True, env={
        "QUIVER__SERVICE__API_KEY": KEY, "QUIVER__SERVICE__READ_ONLY_API_KEY": RO,
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps")}).start()
    _seed(srv, KEY)
    with httpx.Client(base_url=srv.url, headers={"api-key": KEY}, timeout=30) as c:
        r = c.post(f"/collections/{COLL}/snapshots")
        r.raise_for_status()
        srv.snapshot = r.json()["result"]["name"]  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(secured: QuiverServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(secured.grpc_target) as ch:
        yield ch


def _rest(srv: QuiverServer, headers: dict[str, str], method: str, path: str,
          body: Any = None) -> httpx.Response:
    with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as c:
        return c.request(method, path, json=body)


def _rest_message(r: httpx.Response) -> str:
    """REST's refusal text: 401 is plain text, 403 Qdrant's JSON envelope."""
    if r.headers.get("content-type", "").startswith("application/json"):
        return str(r.json()["status"]["error"])
    return r.text


def _fails(call: Callable[..., Any], req: Any, md: Md) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(req, metadata=md, timeout=30)
    return info.value  # type: ignore[return-value]


def _count(srv: QuiverServer, name: str = COLL) -> int:
    r = _rest(srv, {"api-key": KEY}, "POST", f"/collections/{name}/points/count",
              {"exact": True})
    return int(r.json()["result"]["count"])


def _pid(i: int) -> pb.PointId:
    return pb.PointId(num=i)


Q = pb.Query(nearest=pb.VectorInput(dense=pb.DenseVector(data=[1, 0, 0, 0])))
IDS = pb.PointsSelector(points=pb.PointsIdsList(ids=[_pid(1)]))
POINT = pb.PointStruct(id=_pid(99), vectors=pb.Vectors(vector=pb.Vector(
    dense=pb.DenseVector(data=[1, 1, 1, 1]))))

# (service, method, request, the REST call it stands for): reads, then writes
READS: list[tuple[str, str, Any, tuple[str, str, Any]]] = [
    ("Collections", "List", pb.ListCollectionsRequest(), ("GET", "/collections", None)),
    ("Collections", "Get", pb.GetCollectionInfoRequest(collection_name=COLL),
     ("GET", f"/collections/{COLL}", None)),
    ("Collections", "CollectionExists", pb.CollectionExistsRequest(collection_name=COLL),
     ("GET", f"/collections/{COLL}/exists", None)),
    ("Collections", "ListAliases", pb.ListAliasesRequest(), ("GET", "/aliases", None)),
    ("Points", "Count", pb.CountPoints(collection_name=COLL, exact=True),
     ("POST", f"/collections/{COLL}/points/count", {"exact": True})),
    ("Points", "Get", pb.GetPoints(collection_name=COLL, ids=[_pid(1)]),
     ("POST", f"/collections/{COLL}/points", {"ids": [1]})),
    ("Points", "Scroll", pb.ScrollPoints(collection_name=COLL, limit=3),
     ("POST", f"/collections/{COLL}/points/scroll", {"limit": 3})),
    ("Points", "Query", pb.QueryPoints(collection_name=COLL, query=Q, limit=3),
     ("POST", f"/collections/{COLL}/points/query", {"query": [1, 0, 0, 0], "limit": 3})),
    ("Points", "Search", pb.SearchPoints(collection_name=COLL, vector=[1, 0, 0, 0], limit=3),
     ("POST", f"/collections/{COLL}/points/search", {"vector": [1, 0, 0, 0], "limit": 3})),
    ("Snapshots", "List", pb.ListSnapshotsRequest(collection_name=COLL),
     ("GET", f"/collections/{COLL}/snapshots", None)),
]
WRITES: list[tuple[str, str, Any, tuple[str, str, Any]]] = [
    ("Points", "Upsert", pb.UpsertPoints(collection_name=COLL, wait=True, points=[POINT]),
     ("PUT", f"/collections/{COLL}/points", {"points": [{"id": 99, "vector": [1, 1, 1, 1]}]})),
    ("Points", "Delete", pb.DeletePoints(collection_name=COLL, wait=True, points=IDS),
     ("POST", f"/collections/{COLL}/points/delete", {"points": [1]})),
    ("Points", "SetPayload", pb.SetPayloadPoints(
        collection_name=COLL, wait=True, payload={"x": pb.Value(integer_value=1)},
        points_selector=IDS),
     ("POST", f"/collections/{COLL}/points/payload", {"payload": {"x": 1}, "points": [1]})),
    ("Points", "CreateFieldIndex", pb.CreateFieldIndexCollection(
        collection_name=COLL, field_name="i", field_type=pb.FieldTypeInteger, wait=True),
     ("PUT", f"/collections/{COLL}/index", {"field_name": "i", "field_schema": "integer"})),
    ("Collections", "Create", pb.CreateCollection(
        collection_name="new_one", vectors_config=pb.VectorsConfig(params=pb.VectorParams(
            size=4, distance=pb.Distance.Dot))),
     ("PUT", "/collections/new_one", {"vectors": {"size": 4, "distance": "Dot"}})),
    ("Collections", "Delete", pb.DeleteCollection(collection_name=COLL),
     ("DELETE", f"/collections/{COLL}", None)),
    ("Collections", "UpdateAliases", pb.ChangeAliases(actions=[pb.AliasOperations(
        create_alias=pb.CreateAlias(collection_name=COLL, alias_name="al"))]),
     ("POST", "/collections/aliases", {"actions": [
         {"create_alias": {"collection_name": COLL, "alias_name": "al"}}]})),
    ("Snapshots", "Create", pb.CreateSnapshotRequest(collection_name=COLL),
     ("POST", f"/collections/{COLL}/snapshots", None)),
    ("Snapshots", "CreateFull", pb.CreateFullSnapshotRequest(), ("POST", "/snapshots", None)),
]


def _stub(channel: grpc.Channel, service: str) -> Any:
    return {"Collections": pb.CollectionsStub, "Points": pb.PointsStub,
            "Snapshots": pb.SnapshotsStub, "Qdrant": pb.QdrantStub}[service](channel)


def _ids(table: list[Any]) -> list[str]:
    return [f"{s}/{m}" for s, m, _, _ in table]


def _unchanged(srv: QuiverServer) -> None:
    assert _count(srv) == 20
    r = _rest(srv, {"api-key": KEY}, "GET", f"/collections/{COLL}/snapshots")
    assert [s["name"] for s in r.json()["result"]] == [srv.snapshot]  # type: ignore[attr-defined]
    r = _rest(srv, {"api-key": KEY}, "GET", "/collections/new_one/exists")
    assert r.json()["result"]["exists"] is False
    assert _rest(srv, {"api-key": KEY}, "GET", "/aliases").json()["result"]["aliases"] == []
    r = _rest(srv, {"api-key": KEY}, "GET", f"/collections/{COLL}")
    assert r.json()["result"]["payload_schema"] == {}
    r = _rest(srv, {"api-key": KEY}, "POST", f"/collections/{COLL}/points", {"ids": [1]})
    assert r.json()["result"][0]["payload"] == {"i": 1}


# ---- 401: no key, a wrong key ------------------------------------------------------------------


@pytest.mark.parametrize("service,method,req,rest", READS + WRITES, ids=_ids(READS + WRITES))
def test_no_key_is_unauthenticated(secured: QuiverServer, channel: grpc.Channel, service: str,
                                   method: str, req: Any, rest: tuple[str, str, Any]) -> None:
    err = _fails(getattr(_stub(channel, service), method), req, [])
    assert err.code() == StatusCode.UNAUTHENTICATED
    assert err.details() == NO_KEY == _rest_message(_rest(secured, {}, *rest))
    _unchanged(secured)


@pytest.mark.parametrize("md,message", [
    ([("api-key", "wrong")], BAD_KEY),
    ([("authorization", "Bearer wrong")], BAD_KEY),
    ([("api-key", "")], BAD_KEY),
    ([("api-key", KEY + "x")], BAD_KEY),
    ([("api-key", "wrong"), ("authorization", f"Bearer {KEY}")], BAD_KEY),  # api-key wins
    ([("authorization", f"bearer {KEY}")], NO_KEY),  # the scheme is matched exactly
    ([("authorization", f"Basic {KEY}")], NO_KEY),
    ([("api_key", KEY)], NO_KEY),
], ids=["wrong", "bearer-wrong", "empty", "longer", "api-key-wins", "lower-bearer", "basic",
        "underscore"])
def test_wrong_key_is_unauthenticated(secured: QuiverServer, channel: grpc.Channel, md: Md,
                                      message: str) -> None:
    for service, method, req, rest in (READS[0], READS[4], WRITES[0]):
        err = _fails(getattr(_stub(channel, service), method), req, md)
        assert err.code() == StatusCode.UNAUTHENTICATED, (method, err.details())
        assert err.details() == message
        assert _rest_message(_rest(secured, dict(md), *rest)) == message
    _unchanged(secured)


@pytest.mark.parametrize("md", [[], [("api-key", "wrong")], [("api-key", RO)]],
                         ids=["none", "wrong", "read-only"])
def test_health_check_needs_no_key(channel: grpc.Channel, md: Md) -> None:
    reply = pb.QdrantStub(channel).HealthCheck(pb.HealthCheckRequest(), metadata=md,
                                               timeout=30)
    assert reply.title == "quiver - vector search engine" and reply.version


@pytest.mark.parametrize("md", [[], [("api-key", "wrong")]], ids=["none", "wrong"])
def test_standard_health_service_needs_no_key(channel: grpc.Channel, md: Md) -> None:
    """grpc.health.v1.Health, what Kubernetes' gRPC probes ask: open, as in Qdrant."""
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "qdrant.Points", "qdrant.Collections"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), metadata=md,
                           timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=30)
    assert err.value.code() == StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", ["docs/../other", "", "docs/points"])
def test_a_collection_name_is_one_path_segment(secured: QuiverServer, channel: grpc.Channel,
                                               name: str) -> None:
    """The access decision is made on the REST path an RPC stands for: a name that would
    spill into other path segments (or none) is refused before anything runs."""
    err = _fails(_stub(channel, "Points").Upsert,
                 pb.UpsertPoints(collection_name=name, wait=True, points=[POINT]),
                 [("api-key", KEY)])
    assert err.code() == StatusCode.INVALID_ARGUMENT, err.details()
    assert "collection_name" in err.details()
    _unchanged(secured)


# ---- the read-only key -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["api-key", "bearer"])
@pytest.mark.parametrize("key", [RO, KEY], ids=["read-only", "manage"])
@pytest.mark.parametrize("service,method,req,rest", READS, ids=_ids(READS))
def test_reads_with_either_key_and_header_form(secured: QuiverServer, channel: grpc.Channel,
                                               service: str, method: str, req: Any,
                                               rest: tuple[str, str, Any], key: str,
                                               form: str) -> None:
    md = [("api-key", key)] if form == "api-key" else [("authorization", f"Bearer {key}")]
    reply = getattr(_stub(channel, service), method)(req, metadata=md, timeout=30)
    assert _rest(secured, dict(md), *rest).status_code == 200
    if method == "Count":
        assert reply.result.count == 20
    if method == "List" and service == "Collections":
        assert [c.name for c in reply.collections] == [COLL]
    if method == "List" and service == "Snapshots":
        assert [s.name for s in reply.snapshot_descriptions] == [secured.snapshot]
    if method == "Query":
        assert [p.id.num for p in reply.result] == [19, 18, 17]


@pytest.mark.parametrize("form", ["api-key", "bearer"])
@pytest.mark.parametrize("service,method,req,rest", WRITES, ids=_ids(WRITES))
def test_read_only_key_cannot_write(secured: QuiverServer, channel: grpc.Channel, service: str,
                                    method: str, req: Any, rest: tuple[str, str, Any],
                                    form: str) -> None:
    md = [("api-key", RO)] if form == "api-key" else [("authorization", f"Bearer {RO}")]
    err = _fails(getattr(_stub(channel, service), method), req, md)
    assert err.code() == StatusCode.PERMISSION_DENIED, err.details()
    r = _rest(secured, dict(md), *rest)
    assert r.status_code == 403
    assert err.details() == READ_ONLY == _rest_message(r)
    _unchanged(secured)


def test_snapshot_delete_with_read_only_key(secured: QuiverServer,
                                            channel: grpc.Channel) -> None:
    name = secured.snapshot  # type: ignore[attr-defined]
    req = pb.DeleteSnapshotRequest(collection_name=COLL, snapshot_name=name)
    err = _fails(pb.SnapshotsStub(channel).Delete, req, [("api-key", RO)])
    assert err.code() == StatusCode.PERMISSION_DENIED and err.details() == READ_ONLY
    _unchanged(secured)


def test_qdrant_client_over_grpc_with_keys(secured: QuiverServer) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", INSECURE)
        ro = QdrantClient(url=secured.url, grpc_port=secured.grpc_port, prefer_grpc=True,
                          api_key=RO, timeout=30)
        manage = QdrantClient(url=secured.url, grpc_port=secured.grpc_port, prefer_grpc=True,
                              api_key=KEY, timeout=30)
    assert ro.count(COLL, exact=True).count == 20
    assert ro.query_points(COLL, query=[1, 0, 0, 0], limit=1).points[0].id == 19
    with pytest.raises(grpc.RpcError) as info:
        ro.upsert(COLL, [models.PointStruct(id=5, vector=[1, 1, 1, 1])])
    assert info.value.code() == StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    manage.create_collection("scratch", vectors_config=models.VectorParams(
        size=4, distance=models.Distance.DOT))
    manage.upsert("scratch", [models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    assert ro.count("scratch").count == 1
    snap = manage.create_snapshot("scratch")
    assert snap is not None and manage.delete_snapshot("scratch", snap.name)
    assert manage.delete_collection("scratch")
    ro.close()
    manage.close()
    _unchanged(secured)


# ---- JWT RBAC ----------------------------------------------------------------------------------


def _token(access: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, "access": access}, JWT_KEY,
                      algorithm="HS256")


@pytest.fixture(scope="module")
def rbac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    base = tmp_path_factory.mktemp("rpcjwt")
    srv = QuiverServer(base / "storage", grpc=True, env={
        "QUIVER__SERVICE__API_KEY": JWT_KEY, "QUIVER__SERVICE__JWT_RBAC": "true",
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps")}).start()
    _seed(srv, JWT_KEY, (COLL, OTHER))
    yield srv
    srv.stop()


def test_jwt_per_collection_access(rbac: QuiverServer) -> None:
    def same_refusal(call: Callable[..., Any], req: Any, md: Md, rest: tuple[str, str, Any],
                     code: grpc.StatusCode) -> None:
        err = _fails(call, req, md)
        r = _rest(rbac, dict(md), *rest)
        assert err.code() == code, err.details()
        assert err.details() == _rest_message(r), rest
        assert r.status_code == {StatusCode.PERMISSION_DENIED: 403,
                                 StatusCode.UNAUTHENTICATED: 401}[code]

    def count(name: str) -> int:
        return int(_rest(rbac, {"api-key": JWT_KEY}, "POST", f"/collections/{name}/points/count",
                         {"exact": True}).json()["result"]["count"])

    with grpc.insecure_channel(rbac.grpc_target) as ch:
        points, colls = pb.PointsStub(ch), pb.CollectionsStub(ch)
        upsert = (pb.UpsertPoints(collection_name=COLL, wait=True, points=[POINT]),
                  ("PUT", f"/collections/{COLL}/points",
                   {"points": [{"id": 99, "vector": [1, 1, 1, 1]}]}))
        read = [("api-key", _token([{"collection": COLL, "access": "r"}]))]
        assert points.Count(pb.CountPoints(collection_name=COLL, exact=True), metadata=read,
                            timeout=30).result.count == 20
        listed = colls.List(pb.ListCollectionsRequest(), metadata=read, timeout=30)
        assert [c.name for c in listed.collections] == [COLL]  # only what the token may see
        same_refusal(points.Count, pb.CountPoints(collection_name=OTHER), read,
                     ("POST", f"/collections/{OTHER}/points/count", {}),
                     StatusCode.PERMISSION_DENIED)
        same_refusal(points.Upsert, upsert[0], read, upsert[1], StatusCode.PERMISSION_DENIED)
        same_refusal(colls.Create, pb.CreateCollection(
            collection_name="new_one", vectors_config=pb.VectorsConfig(
                params=pb.VectorParams(size=4, distance=pb.Distance.Dot))), read,
            ("PUT", "/collections/new_one", {"vectors": {"size": 4, "distance": "Dot"}}),
            StatusCode.PERMISSION_DENIED)
        # read-write on one collection, as a bearer token
        rw = [("authorization", f"Bearer {_token([{'collection': COLL, 'access': 'rw'}])}")]
        res = points.Upsert(upsert[0], metadata=rw, timeout=30)
        assert res.result.status == pb.UpdateStatus.Completed
        assert count(COLL) == 21
        same_refusal(points.Upsert, pb.UpsertPoints(collection_name=OTHER, wait=True,
                                                    points=[POINT]), rw,
                     ("PUT", f"/collections/{OTHER}/points",
                      {"points": [{"id": 99, "vector": [1, 1, 1, 1]}]}),
                     StatusCode.PERMISSION_DENIED)
        assert count(OTHER) == 20
        # a token signed with another key; an expired one
        forged = [("api-key", jwt.encode({"exp": int(time.time()) + 600, "access": "m"},
                                         JWT_KEY + "x", algorithm="HS256"))]
        same_refusal(points.Count, pb.CountPoints(collection_name=COLL), forged,
                     ("POST", f"/collections/{COLL}/points/count", {}),
                     StatusCode.PERMISSION_DENIED)
        garbage = [("api-key", "foo.bar.baz")]
        same_refusal(points.Count, pb.CountPoints(collection_name=COLL), garbage,
                     ("POST", f"/collections/{COLL}/points/count", {}),
                     StatusCode.UNAUTHENTICATED)
        # global manage: may create collections
        manage = [("api-key", _token("m"))]
        colls.Create(pb.CreateCollection(collection_name="by_jwt", vectors_config=pb.VectorsConfig(
            params=pb.VectorParams(size=4, distance=pb.Distance.Dot))), metadata=manage,
            timeout=30)
        assert colls.CollectionExists(pb.CollectionExistsRequest(collection_name="by_jwt"),
                                      metadata=manage, timeout=30).result.exists


# ---- TLS ---------------------------------------------------------------------------------------


def _tls_env(pki: dict[str, str], tmp: Path, **extra: str) -> dict[str, str]:
    return {"QUIVER__SERVICE__ENABLE_TLS": "true", "QUIVER__TLS__CERT": pki["server"],
            "QUIVER__TLS__KEY": pki["server-key"], "QUIVER__TLS__CA_CERT": pki["ca"],
            "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp / "snaps"), **extra}


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def test_grpc_over_tls_with_the_rest_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    trust = ssl.create_default_context(cafile=pki["ca"])
    srv = TlsServer(tmp_path / "storage", grpc=True, context=trust,
                    env=_tls_env(pki, tmp_path, QUIVER__SERVICE__API_KEY=KEY)).start()
    try:
        with httpx.Client(base_url=srv.url, verify=trust, headers={"api-key": KEY},
                          timeout=30) as c:
            c.put("/collections/tls", json={"vectors": {"size": 2, "distance": "Dot"}}
                  ).raise_for_status()
        creds = grpc.ssl_channel_credentials(root_certificates=_read(pki["ca"]))
        with grpc.secure_channel(srv.grpc_target, creds) as ch:
            assert pb.QdrantStub(ch).HealthCheck(pb.HealthCheckRequest(), timeout=30).title
            points = pb.PointsStub(ch)
            points.Upsert(pb.UpsertPoints(collection_name="tls", wait=True, points=[
                pb.PointStruct(id=_pid(1), vectors=pb.Vectors(vector=pb.Vector(
                    dense=pb.DenseVector(data=[1, 0]))))]), metadata=[("api-key", KEY)],
                timeout=30)
            assert points.Count(pb.CountPoints(collection_name="tls"),
                                metadata=[("api-key", KEY)], timeout=30).result.count == 1
            err = _fails(points.Count, pb.CountPoints(collection_name="tls"), [])
            assert err.code() == StatusCode.UNAUTHENTICATED and err.details() == NO_KEY
        # the server's certificate is the one REST presents
        with socket.create_connection(("127.0.0.1", srv.grpc_port), timeout=10) as raw, \
                trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            grpc_cert = tls.getpeercert(binary_form=True)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw, \
                trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.getpeercert(binary_form=True) == grpc_cert
        # plaintext on the TLS port, and a client that trusts another CA, both fail
        (tmp_path / "other").mkdir()
        stranger = make_pki(tmp_path / "other")["ca"]
        for ch in (grpc.insecure_channel(srv.grpc_target),
                   grpc.secure_channel(srv.grpc_target, grpc.ssl_channel_credentials(
                       root_certificates=_read(stranger)))):
            with ch:
                err = _fails(pb.QdrantStub(ch).HealthCheck, pb.HealthCheckRequest(), [])
                assert err.code() == StatusCode.UNAVAILABLE, err.details()
    finally:
        srv.stop()


def test_grpc_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with_cert = ssl.create_default_context(cafile=pki["ca"])
    with_cert.load_cert_chain(pki["client"], pki["client-key"])
    srv = TlsServer(tmp_path / "storage", grpc=True, context=with_cert, env=_tls_env(
        pki, tmp_path, QUIVER__SERVICE__VERIFY_HTTPS_CLIENT_CERTIFICATE="true")).start()
    try:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(pki["ca"]), private_key=_read(pki["client-key"]),
            certificate_chain=_read(pki["client"]))
        with grpc.secure_channel(srv.grpc_target, creds) as ch:
            reply = pb.CollectionsStub(ch).List(pb.ListCollectionsRequest(), timeout=30)
            assert list(reply.collections) == []
        without = grpc.ssl_channel_credentials(root_certificates=_read(pki["ca"]))
        with grpc.secure_channel(srv.grpc_target, without) as ch:
            err = _fails(pb.CollectionsStub(ch).List, pb.ListCollectionsRequest(), [])
            assert err.code() == StatusCode.UNAVAILABLE, err.details()
    finally:
        srv.stop()


# ---- grpc_port: 0 ------------------------------------------------------------------------------


def _listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on (its socket inodes matched against /proc/net/tcp*)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def test_grpc_port_zero_disables_grpc(tmp_path: Path) -> None:
    """`--grpc-port 0` serves no gRPC, even with a port in the environment; REST works."""
    env_port = free_port()
    srv = QuiverServer(tmp_path / "storage", env={
        "QUIVER__SERVICE__GRPC_PORT": str(env_port),
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")})
    srv.grpc_port = 0
    srv.start()
    try:
        assert httpx.get(srv.url + "/collections", timeout=10).status_code == 200
        assert _listening_ports(srv.pid) == {srv.port}
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", env_port), timeout=5).close()
        with grpc.insecure_channel(f"127.0.0.1:{env_port}") as ch:
            err = _fails(pb.QdrantStub(ch).HealthCheck, pb.HealthCheckRequest(), [])
            assert err.code() == StatusCode.UNAVAILABLE
    finally:
        srv.stop()


def test_grpc_port_settings(tmp_path: Path) -> None:
    assert load_settings(env={}).service.grpc_port == 6334
    assert load_settings(env={"QUIVER__SERVICE__GRPC_PORT": "0"}).service.grpc_port == 0
    cfg = tmp_path / "config.yaml"
    cfg.write_text("service:\n  grpc_port: null\n")
    assert load_settings(str(cfg)).service.grpc_port is None
