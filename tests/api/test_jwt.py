"""JWT RBAC (`service.jwt_rbac`) through the real server, with tokens made by PyJWT: Qdrant's
claims (`exp`, `access`, `value_exists`), its 401/403 answers and its per-route rights."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from openapi_contract import validate_response, validating_qdrant_client
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse
from server import QuiverServer

from api.auth import BAD_KEY, FULL, NO_KEY, JwtVerifier, Need, need_of
from api.settings import SettingsError, load_settings

KEY = "jwt-signing-secret-" + "0123456789abcdef" * 3  # >= 64 bytes: PyJWT warns below (HS512)
DOCS, OTHER = "docs", "other"
INSECURE = "Api key is used with an insecure connection"


def token(claims: dict[str, Any], key: str = KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def soon() -> int:
    return int(time.time()) + 600


def rights(access: Any, **extra: Any) -> str:
    return token({"exp": soon(), "access": access, **extra})


@pytest.fixture(scope="module")
def rbac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    """jwt_rbac on; two collections of 10 points, `tenant` "a" on even ids, "b" on odd."""
    base = tmp_path_factory.mktemp("jwt")
    srv = QuiverServer(base / "storage", env={
        "QUIVER__SERVICE__API_KEY": KEY, "QUIVER__SERVICE__JWT_RBAC": "true",
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"),
        "QUIVER__STORAGE__TEMP_PATH": str(base / "tmp")}).start()
    with httpx.Client(base_url=srv.url, headers={"api-key": KEY}, timeout=30) as c:
        for name in (DOCS, OTHER):
            c.put(f"/collections/{name}",
                  json={"vectors": {"size": 4, "distance": "Dot"}}).raise_for_status()
            points = [{"id": i, "vector": [i, 1, 0, 0],
                       "payload": {"tenant": "ab"[i % 2], "n": i}} for i in range(10)]
            c.put(f"/collections/{name}/points?wait=true",
                  json={"points": points}).raise_for_status()
        c.post("/collections/aliases", json={"actions": [
            {"create_alias": {"collection_name": DOCS, "alias_name": "docs_alias"}},
            {"create_alias": {"collection_name": OTHER, "alias_name": "other_alias"}},
        ]}).raise_for_status()
    yield srv
    srv.stop()


def _http(srv: QuiverServer, tok: str, bearer: bool = False) -> httpx.Client:
    headers = {"Authorization": f"Bearer {tok}"} if bearer else {"api-key": tok}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=30)


def _client(srv: QuiverServer, tok: str) -> QdrantClient:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", INSECURE)
        return validating_qdrant_client(srv.url, api_key=tok, timeout=30)


def _count(srv: QuiverServer, name: str) -> int:
    with _http(srv, KEY) as c:
        return int(c.post(f"/collections/{name}/points/count",
                          json={"exact": True}).json()["result"]["count"])


def _forbidden(r: httpx.Response, message: str, method: str, path: str) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["status"] == {"error": f"Forbidden: {message}"}
    validate_response(method, path, 403, r.json())


# --------------------------------------------------------------------------- settings


def test_jwt_rbac_setting() -> None:
    env = {"QUIVER__SERVICE__API_KEY": "k", "QUIVER__SERVICE__JWT_RBAC": "true"}
    assert load_settings(env=env).service.jwt_rbac is True
    assert load_settings(env={}).service.jwt_rbac is False
    for bad in ({"QUIVER__SERVICE__JWT_RBAC": "true"},
                {"QUIVER__SERVICE__JWT_RBAC": "true", "QUIVER__SERVICE__API_KEY": ""},
                {"QUIVER__SERVICE__JWT_RBAC": "true", "QUIVER__SERVICE__READ_ONLY_API_KEY": "r"}):
        with pytest.raises(SettingsError, match=r"^service\.jwt_rbac: requires service\.api_key"):
            load_settings(env=bad)
    with pytest.raises(SettingsError, match=r"^service\.jwt_rbac: expected a boolean"):
        load_settings(env={"QUIVER__SERVICE__API_KEY": "k", "QUIVER__SERVICE__JWT_RBAC": "yes!"})


def test_a_one_byte_key_signs_tokens() -> None:
    # Qdrant takes any non-empty key; PyJWT only warns about short HMAC keys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        claims = JwtVerifier(b"x").decode(token({"exp": soon()}, key="x").encode())
    assert claims is not None and claims.access == FULL


# --------------------------------------------------------------------------- the route table


@pytest.mark.parametrize("method,path,need,name", [
    ("GET", "/collections", Need.LIST, None),
    ("GET", "/aliases", Need.LIST, None),
    ("GET", "/telemetry", Need.GLOBAL_READ, None),
    ("GET", "/metrics", Need.GLOBAL_READ, None),
    ("GET", "/cluster", Need.GLOBAL_READ, None),
    ("GET", "/snapshots", Need.GLOBAL_READ, None),
    ("GET", "/snapshots/x.snapshot", Need.GLOBAL_READ, None),
    ("POST", "/snapshots", Need.MANAGE, None),
    ("DELETE", "/snapshots/x.snapshot", Need.MANAGE, None),
    ("POST", "/snapshots/upload", Need.MANAGE, None),
    ("POST", "/collections/aliases", Need.MANAGE, None),
    ("PUT", "/collections/c", Need.MANAGE, None),
    ("POST", "/locks", Need.MANAGE, None),
    ("GET", "/collections/c", Need.COLL_READ, "c"),
    ("GET", "/collections/c/exists", Need.COLL_READ, "c"),
    ("GET", "/collections/c/aliases", Need.COLL_READ, "c"),
    ("GET", "/collections/c/points/7", Need.COLL_READ, "c"),
    ("GET", "/collections/c/snapshots/s.snapshot", Need.COLL_READ, "c"),
    ("GET", "/collections/c/cluster", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/scroll", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/count", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/query", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/query/batch", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/query/groups", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/search", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/search/groups", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/search/matrix/pairs", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/search/matrix/offsets", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/recommend", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/recommend/groups", Need.COLL_READ, "c"),
    ("POST", "/collections/c/points/discover/batch", Need.COLL_READ, "c"),
    ("POST", "/collections/c/facet", Need.COLL_READ, "c"),
    ("PUT", "/collections/c/points", Need.COLL_WRITE, "c"),
    ("POST", "/collections/c/points/delete", Need.COLL_WRITE, "c"),
    ("POST", "/collections/c/points/payload", Need.COLL_WRITE, "c"),
    ("PUT", "/collections/c/points/vectors", Need.COLL_WRITE, "c"),
    ("POST", "/collections/c/points/batch", Need.COLL_WRITE, "c"),
    ("PUT", "/collections/c/index", Need.COLL_MANAGE, "c"),
    ("DELETE", "/collections/c/index/f", Need.COLL_MANAGE, "c"),
    ("POST", "/collections/c/snapshots", Need.COLL_WRITE, "c"),
    ("DELETE", "/collections/c/snapshots/s.snapshot", Need.COLL_WRITE, "c"),
    ("PATCH", "/collections/c", Need.COLL_MANAGE, "c"),
    ("DELETE", "/collections/c", Need.COLL_MANAGE, "c"),
    ("POST", "/collections/c/snapshots/upload", Need.COLL_MANAGE, "c"),
    ("PUT", "/collections/c/snapshots/recover", Need.COLL_MANAGE, "c"),
    ("POST", "/collections/c/shards/0/snapshots/upload", Need.COLL_MANAGE, "c"),
    ("PUT", "/collections/c/shards", Need.COLL_MANAGE, "c"),
    ("POST", "/collections/c/shards/delete", Need.COLL_MANAGE, "c"),
    ("POST", "/collections/c/cluster", Need.COLL_MANAGE, "c"),
])
def test_need_of(method: str, path: str, need: Need, name: str | None) -> None:
    assert need_of(method, path) == (need, name)


# --------------------------------------------------------------------------- tokens refused


@pytest.mark.parametrize("make,status,message", [
    (lambda: token({"exp": int(time.time()) - 120, "access": "m"}), 403, "ExpiredSignature"),
    (lambda: token({"exp": soon(), "access": "m"}, key=KEY + "x"), 403, "InvalidSignature"),
    (lambda: token({"exp": soon(), "access": "m"}, key=None, algorithm="none"), 401, BAD_KEY),
    (lambda: token({"exp": soon(), "access": "m"}, algorithm="HS512"), 401, BAD_KEY),
    (lambda: "garbage", 401, BAD_KEY),
    (lambda: "foo.bar.baz", 401, BAD_KEY),
    (lambda: token({"access": "m"}), 401, BAD_KEY),  # no exp: jsonwebtoken requires it
    (lambda: token({"exp": soon(), "access": "w"}), 401, BAD_KEY),  # not a valid access
    (lambda: token({"exp": soon(), "access": None}), 401, BAD_KEY),
    (lambda: token({"exp": soon(), "access": [{"collection": DOCS, "access": "m"}]}), 401,
     BAD_KEY),
    (lambda: token({"exp": str(soon()), "access": "m"}), 401, BAD_KEY),
    (lambda: rights([{"collection": DOCS, "access": "r"}, {"collection": DOCS, "access": "rw"}]),
     401, "access: Collection name should be unique"),
    (lambda: rights([{"collection": DOCS, "access": "r", "payload": {"tenant": "a"}}]),
     401, "access: payload restrictions are not supported"),
])
@pytest.mark.parametrize("bearer", [False, True])
def test_bad_tokens_are_refused(rbac: QuiverServer, make: Any, status: int, message: str,
                                bearer: bool) -> None:
    with _http(rbac, make(), bearer=bearer) as c:
        r = c.get("/collections")
    assert r.status_code == status and r.text == message
    assert r.headers["content-type"].startswith("text/plain")


def test_no_key_and_probes(rbac: QuiverServer) -> None:
    with httpx.Client(base_url=rbac.url, timeout=30) as c:
        r = c.get("/collections")
        assert r.status_code == 401 and r.text == NO_KEY
        assert c.get("/healthz").status_code == 200


def test_exp_has_thirty_seconds_of_leeway(rbac: QuiverServer) -> None:
    with _http(rbac, token({"exp": int(time.time()) - 10, "access": "r"})) as c:
        assert c.get("/collections").status_code == 200


def test_tokens_are_keys_only_with_jwt_rbac(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("nojwt")
    srv = QuiverServer(base / "storage", env={"QUIVER__SERVICE__API_KEY": KEY}).start()
    try:
        with _http(srv, token({"exp": soon(), "access": "m"})) as c:
            r = c.get("/collections")
        assert r.status_code == 401 and r.text == BAD_KEY
    finally:
        srv.stop()


# --------------------------------------------------------------------------- global access


def test_plain_api_key_keeps_full_access(rbac: QuiverServer) -> None:
    with _http(rbac, KEY) as c:
        assert c.get("/telemetry").status_code == 200
        names = {x["name"] for x in c.get("/collections").json()["result"]["collections"]}
        assert names == {DOCS, OTHER}


@pytest.mark.parametrize("claims", [{"access": "m"}, {}])  # no `access`: full access
def test_global_manage_token(rbac: QuiverServer, claims: dict[str, Any]) -> None:
    tok = token({"exp": soon(), "sub": "someone", **claims})
    client = _client(rbac, tok)
    client.create_collection("scratch", vectors_config=models.VectorParams(size=4,
                                                                           distance="Dot"))
    client.upsert("scratch", [models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    assert client.count("scratch", exact=True).count == 1
    snap = client.create_snapshot("scratch")
    assert snap is not None and client.delete_snapshot("scratch", snap.name)
    assert client.delete_collection("scratch")
    with _http(rbac, tok, bearer=True) as c:
        assert c.get("/telemetry").status_code == 200


def test_global_read_token(rbac: QuiverServer) -> None:
    tok = rights("r")
    client = _client(rbac, tok)
    assert {c.name for c in client.get_collections().collections} == {DOCS, OTHER}
    assert client.count(OTHER, exact=True).count == 10
    assert client.query_points(DOCS, query=[1, 0, 0, 0], limit=1).points[0].id == 9
    with pytest.raises(UnexpectedResponse) as exc:
        client.upsert(DOCS, [models.PointStruct(id=99, vector=[1, 1, 1, 1])])
    assert exc.value.status_code == 403
    with _http(rbac, tok) as c:
        assert c.get("/telemetry").status_code == 200
        for method, path, body in [
            ("POST", f"/collections/{DOCS}/points/delete", {"points": [1]}),
            ("PUT", "/collections/new_one", {"vectors": {"size": 4, "distance": "Dot"}}),
            ("DELETE", f"/collections/{OTHER}", None),
            ("POST", "/snapshots", None),
        ]:
            r = c.request(method, path, json=body)
            _forbidden(r, "Global manage access is required", method, path)
    assert _count(rbac, DOCS) == 10


# --------------------------------------------------------------------------- per collection


def test_read_one_collection(rbac: QuiverServer) -> None:
    tok = rights([{"collection": DOCS, "access": "r"}])
    client = _client(rbac, tok)
    assert [c.name for c in client.get_collections().collections] == [DOCS]
    assert client.get_collection(DOCS).points_count == 10
    assert len(client.scroll(DOCS, limit=3)[0]) == 3
    assert client.query_points(DOCS, query=[1, 0, 0, 0], limit=2).points[0].id == 9
    with pytest.raises(UnexpectedResponse) as exc:
        client.upsert(DOCS, [models.PointStruct(id=99, vector=[1, 1, 1, 1])])
    assert exc.value.status_code == 403
    with pytest.raises(UnexpectedResponse) as exc:
        client.count(OTHER)
    assert exc.value.status_code == 403
    with _http(rbac, tok) as c:
        # the new read routes pass the gate (whatever their handlers answer)
        for path, body in [
            ("/points/query/groups", {"query": [1, 0, 0, 0], "group_by": "tenant", "limit": 2}),
            ("/facet", {"key": "tenant"}),
            ("/points/search/matrix/pairs", {"sample": 4, "limit": 2}),
            ("/points/recommend", {"positive": [1], "limit": 2}),
            ("/points/discover", {"target": 1, "limit": 2}),
        ]:
            r = c.post(f"/collections/{DOCS}{path}", json=body)
            assert r.status_code not in (401, 403), (path, r.text)
            r = c.post(f"/collections/{OTHER}{path}", json=body)
            _forbidden(r, f"Access to collection {OTHER} is required", "POST",
                       "/collections/{collection_name}" + path)
        r = c.put(f"/collections/{DOCS}/points", json={"points": [{"id": 99,
                                                                    "vector": [1, 1, 1, 1]}]})
        _forbidden(r, f"Write access to collection {DOCS} is required", "PUT",
                   "/collections/{collection_name}/points")
        r = c.get(f"/collections/{OTHER}")
        _forbidden(r, f"Access to collection {OTHER} is required", "GET",
                   "/collections/{collection_name}")
        r = c.get("/telemetry")
        _forbidden(r, "Global access is required", "GET", "/telemetry")
        r = c.put("/collections/new_one", json={"vectors": {"size": 4, "distance": "Dot"}})
        _forbidden(r, "Global access is required", "PUT", "/collections/{collection_name}")
        r = c.get("/snapshots")
        _forbidden(r, "Global access is required", "GET", "/snapshots")
        aliases = c.get("/aliases").json()["result"]["aliases"]
        assert aliases == [{"alias_name": "docs_alias", "collection_name": DOCS}]
        r = c.post(f"/collections/{DOCS}/snapshots/upload",
                   files={"snapshot": ("x.snapshot", b"not a tar")})
        assert r.status_code == 403
        assert r.text == f"Forbidden: Write access to collection {DOCS} is required"
    assert _count(rbac, DOCS) == 10


def test_read_write_one_collection(rbac: QuiverServer) -> None:
    tok = rights([{"collection": DOCS, "access": "rw"}, {"collection": "absent", "access": "r"}])
    client = _client(rbac, tok)
    assert [c.name for c in client.get_collections().collections] == [DOCS]
    client.upsert(DOCS, [models.PointStruct(id=99, vector=[1, 1, 1, 1])])
    assert client.count(DOCS, exact=True).count == 11
    client.delete(DOCS, models.PointIdsList(points=[99]))
    snap = client.create_snapshot(DOCS)
    assert snap is not None and client.delete_snapshot(DOCS, snap.name)
    with _http(rbac, tok) as c:
        r = c.delete(f"/collections/{DOCS}")
        _forbidden(r, "Manage access for this operation is required", "DELETE",
                   "/collections/{collection_name}")
        r = c.post(f"/collections/{OTHER}/points/delete", json={"points": [1]})
        _forbidden(r, f"Access to collection {OTHER} is required", "POST",
                   "/collections/{collection_name}/points/delete")
        r = c.post("/collections/aliases", json={"actions": []})
        _forbidden(r, "Global access is required", "POST", "/collections/aliases")
        r = c.put(f"/collections/{DOCS}/index", json={"field_name": "n", "field_schema": "integer"})
        _forbidden(r, "Manage access for this operation is required", "PUT",
                   "/collections/{collection_name}/index")
    assert _count(rbac, DOCS) == 10 and _count(rbac, OTHER) == 10


def test_bodies_cannot_reach_other_collections(rbac: QuiverServer) -> None:
    """`lookup_from` and `with_lookup` name a collection in the body: reading it needs access
    too (Qdrant's check_lookup_from / check_with_lookup), at any depth, on every endpoint."""
    tok = rights([{"collection": DOCS, "access": "r"}])
    bodies = [
        ("points/query", {"query": 3, "lookup_from": {"collection": OTHER}}),
        ("points/query", {"prefetch": {"query": 3, "lookup_from": {"collection": OTHER}},
                          "query": {"fusion": "rrf"}}),
        ("points/query", {"query": {"recommend": {"positive": [3]}},
                          "lookup_from": {"collection": OTHER}}),
        ("points/query/batch", {"searches": [{"query": 3, "lookup_from": {
            "collection": OTHER}}]}),
        ("points/query/groups", {"query": [1, 1, 0, 0], "group_by": "tenant",
                                 "with_lookup": {"collection": OTHER}}),
        ("points/query/groups", {"query": [1, 1, 0, 0], "group_by": "tenant",
                                 "with_lookup": "other_alias"}),
        ("points/recommend", {"positive": [3], "limit": 3, "lookup_from": {
            "collection": OTHER}}),
        ("points/recommend/groups", {"positive": [3], "limit": 3, "group_by": "tenant",
                                     "group_size": 2, "with_lookup": OTHER}),
        ("points/discover", {"target": 3, "context": [{"positive": 1, "negative": 2}],
                             "limit": 3, "lookup_from": {"collection": OTHER}}),
    ]
    with _http(rbac, tok) as c:
        for path, body in bodies:
            r = c.post(f"/collections/{DOCS}/{path}", json=body)
            assert r.status_code == 403, (path, body, r.text)
            assert "is required" in r.json()["status"]["error"], r.text
        own = {"query": 3, "lookup_from": {"collection": DOCS}}  # its own collection: fine
        assert c.post(f"/collections/{DOCS}/points/query", json=own).status_code == 200


# --------------------------------------------------------------------------- value_exists


@pytest.mark.parametrize("matches,status,message", [
    ([{"key": "tenant", "value": "a"}], 200, None),
    ([{"key": "tenant", "value": "a"}, {"key": "n", "value": 4}], 200, None),
    ([{"key": "tenant", "value": "c"}], 401, "Invalid JWT, stateful validation failed"),
    ([{"key": "tenant", "value": "a"}, {"key": "n", "value": 3}], 401,
     "Invalid JWT, stateful validation failed"),
])
def test_value_exists(rbac: QuiverServer, matches: list[dict[str, Any]], status: int,
                      message: str | None) -> None:
    tok = rights("r", value_exists={"collection": OTHER, "matches": matches})
    with _http(rbac, tok) as c:
        r = c.get(f"/collections/{DOCS}")
    assert r.status_code == status
    if message is not None:
        assert r.text == message


def test_value_exists_follows_the_data(rbac: QuiverServer) -> None:
    tok = rights([{"collection": DOCS, "access": "r"}],
                 value_exists={"collection": OTHER, "matches": [{"key": "n", "value": 7}]})
    with _http(rbac, tok) as c:
        assert c.get(f"/collections/{DOCS}").status_code == 200
        with _http(rbac, KEY) as admin:
            admin.post(f"/collections/{OTHER}/points/delete?wait=true",
                       json={"points": [7]}).raise_for_status()
        try:
            r = c.get(f"/collections/{DOCS}")
            assert r.status_code == 401 and r.text == "Invalid JWT, stateful validation failed"
        finally:
            with _http(rbac, KEY) as admin:
                admin.put(f"/collections/{OTHER}/points?wait=true", json={"points": [
                    {"id": 7, "vector": [7, 1, 0, 0], "payload": {"tenant": "b", "n": 7}},
                ]}).raise_for_status()
        assert c.get(f"/collections/{DOCS}").status_code == 200


def test_value_exists_in_a_missing_collection_is_403(rbac: QuiverServer) -> None:
    tok = rights("m", value_exists={"collection": "absent",
                                    "matches": [{"key": "n", "value": 1}]})
    with _http(rbac, tok) as c:
        r = c.get("/collections")
    assert r.status_code == 403 and r.text == "Invalid JWT, stateful validation failed"
