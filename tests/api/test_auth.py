"""API keys and TLS through the real server: Qdrant's 401/403 answers, read-only semantics,
authorisation before the body is read, HTTPS and mutual TLS."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_contract import validate_response, validating_qdrant_client
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse
from server import QuiverServer, TlsServer, make_pki

from api.auth import BAD_KEY, NO_KEY, READ_ONLY, is_read
from api.settings import load_settings
from bench.server import quiver_command

KEY, RO = "manage-secret", "read-only-secret"
COLL = "docs"
INSECURE = "Api key is used with an insecure connection"  # qdrant-client, over plain http


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    """A server with both keys, one collection of 20 points and one snapshot of it."""
    base = tmp_path_factory.mktemp("auth")
    srv = QuiverServer(base / "storage", env={
        "QUIVER__SERVICE__API_KEY": KEY, "QUIVER__SERVICE__READ_ONLY_API_KEY": RO,
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"),
        "QUIVER__STORAGE__TEMP_PATH": str(base / "tmp")}).start()
    srv.dirs = [base / "snaps", base / "tmp"]  # type: ignore[attr-defined]
    with httpx.Client(base_url=srv.url, headers={"api-key": KEY}, timeout=30) as c:
        c.put(f"/collections/{COLL}",
              json={"vectors": {"size": 4, "distance": "Dot"}}).raise_for_status()
        points = [{"id": i, "vector": [i, 1, 0, 0], "payload": {"i": i}} for i in range(20)]
        c.put(f"/collections/{COLL}/points?wait=true", json={"points": points}).raise_for_status()
        r = c.post(f"/collections/{COLL}/snapshots")
        r.raise_for_status()
        srv.snapshot = r.json()["result"]["name"]  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def _client(srv: QuiverServer, key: str, **kw: Any) -> QdrantClient:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", INSECURE)
        return validating_qdrant_client(srv.url, api_key=key, timeout=30, **kw)


def _http(srv: QuiverServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers=headers, timeout=30)


# --------------------------------------------------------------------------- the table


def test_read_table() -> None:
    reads = ["/collections/c/points", "/collections/c/points/scroll", "/collections/c/points/count",
             "/collections/c/points/search", "/collections/c/points/search/batch",
             "/collections/c/points/search/groups", "/collections/c/points/search/matrix/pairs",
             "/collections/c/points/query", "/collections/c/points/query/batch",
             "/collections/c/points/query/groups", "/collections/c/points/recommend/batch",
             "/collections/c/points/discover", "/collections/c/facet"]
    writes = ["/collections/c/points/delete", "/collections/c/points/payload",
              "/collections/c/points/payload/clear", "/collections/c/points/vectors/delete",
              "/collections/c/points/batch", "/collections/aliases", "/collections/c/snapshots",
              "/collections/c/snapshots/upload", "/snapshots", "/collections/c/points/search/x",
              "/collections/c/d/points/search"]
    assert all(is_read("POST", p) for p in reads)
    assert not any(is_read("POST", p) for p in writes)
    assert is_read("GET", "/collections/c/snapshots/x.snapshot") and is_read("HEAD", "/snapshots")
    for method in ("PUT", "PATCH", "DELETE"):
        assert not is_read(method, "/collections/c/points")


def test_env_keys_are_taken_verbatim() -> None:
    env = {"QUIVER__SERVICE__API_KEY": "0x1F", "QUIVER__SERVICE__READ_ONLY_API_KEY": "yes",
           "QUIVER__SERVICE__ENABLE_TLS": "true"}
    svc = load_settings(env=env).service
    assert (svc.api_key, svc.read_only_api_key, svc.enable_tls) == ("0x1F", "yes", True)


# --------------------------------------------------------------------------- 401


@pytest.mark.parametrize("method,path", [
    ("GET", "/collections"), ("GET", f"/collections/{COLL}"), ("GET", "/telemetry"),
    ("POST", f"/collections/{COLL}/points/search"), ("PUT", "/collections/x"),
    ("GET", "/snapshots"), ("POST", f"/collections/{COLL}/snapshots/upload"),
    ("GET", "/nonexistent"),
])
def test_no_key_is_401(secured: QuiverServer, method: str, path: str) -> None:
    with _http(secured) as c:
        r = c.request(method, path, json={"vector": [1, 0, 0, 0], "limit": 1})
    assert r.status_code == 401
    assert r.text == NO_KEY and r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("headers,message", [
    ({"api-key": "wrong"}, BAD_KEY),
    ({"Authorization": "Bearer wrong"}, BAD_KEY),
    ({"api-key": ""}, BAD_KEY),
    ({"api-key": KEY + "x"}, BAD_KEY),
    ({"api-key": "wrong", "Authorization": f"Bearer {KEY}"}, BAD_KEY),  # api-key wins
    ({"Authorization": f"bearer {KEY}"}, NO_KEY),  # the scheme is matched exactly, as Qdrant
    ({"Authorization": f"Basic {KEY}"}, NO_KEY),
    ({"api_key": KEY}, NO_KEY),  # the header is `api-key` (qdrant/qdrant#4147)
])
def test_wrong_key_is_401(secured: QuiverServer, headers: dict[str, str], message: str) -> None:
    with _http(secured, **headers) as c:
        r = c.get("/collections")
    assert r.status_code == 401 and r.text == message


@pytest.mark.parametrize("key", [KEY, RO])
@pytest.mark.parametrize("form", ["api-key", "bearer"])
def test_both_header_forms_accepted(secured: QuiverServer, key: str, form: str) -> None:
    headers = {"api-key": key} if form == "api-key" else {"Authorization": f"Bearer {key}"}
    with _http(secured, **headers) as c:
        r = c.get(f"/collections/{COLL}")
        assert r.status_code == 200 and r.json()["result"]["points_count"] == 20
        r = c.post(f"/collections/{COLL}/points/count", json={"exact": True})
        assert r.json()["result"]["count"] == 20


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz", "/", "/healthz/", "//readyz"])
@pytest.mark.parametrize("headers", [{}, {"api-key": "wrong"}])
def test_probes_stay_open(secured: QuiverServer, path: str, headers: dict[str, str]) -> None:
    with _http(secured, **headers) as c:
        assert c.get(path).status_code == 200


def test_server_without_keys_stays_open(server: QuiverServer) -> None:
    for headers in ({}, {"api-key": "anything"}):
        with _http(server, **headers) as c:
            assert c.get("/collections").status_code == 200
            assert c.get("/telemetry").status_code == 200


# --------------------------------------------------------------------------- read-only key


def test_read_only_key_reads(secured: QuiverServer) -> None:
    client = _client(secured, RO)
    assert [c.name for c in client.get_collections().collections] == [COLL]
    assert client.collection_exists(COLL) and client.get_collection(COLL).points_count == 20
    assert [p.id for p in client.retrieve(COLL, [1, 2])] == [1, 2]
    assert len(client.scroll(COLL, limit=5)[0]) == 5
    assert client.count(COLL, exact=True).count == 20
    assert client.query_points(COLL, query=[1, 0, 0, 0], limit=3).points[0].id == 19
    res = client.query_batch_points(COLL, [models.QueryRequest(query=[1, 0, 0, 0], limit=1)])
    assert res[0].points[0].id == 19
    assert [s.name for s in client.list_snapshots(COLL)] == [secured.snapshot]
    assert client.list_full_snapshots() == []
    with _http(secured, **{"api-key": RO}) as c:
        for path, body in [("/points/search", {"vector": [1, 0, 0, 0], "limit": 2}),
                           ("/points/search/batch", {"searches": [{"vector": [1, 0, 0, 0],
                                                                   "limit": 2}]})]:
            r = c.post(f"/collections/{COLL}{path}", json=body)
            assert r.status_code == 200, r.text
        assert c.get(f"/collections/{COLL}/points/3").json()["result"]["id"] == 3
        assert c.get("/telemetry").status_code == 200
        r = c.get(f"/collections/{COLL}/snapshots/{secured.snapshot}")
        assert r.status_code == 200 and len(r.content) > 0
        r = c.get(f"/collections/{COLL}/snapshots/nope.snapshot")
        assert r.status_code == 404  # a read: the key passes, the handler answers


WRITES: list[tuple[str, str, Any]] = [
    ("PUT", f"/collections/{COLL}/points", {"points": [{"id": 99, "vector": [1, 1, 1, 1]}]}),
    ("POST", f"/collections/{COLL}/points/delete", {"points": [1]}),
    ("POST", f"/collections/{COLL}/points/payload", {"payload": {"x": 1}, "points": [1]}),
    ("PUT", f"/collections/{COLL}/points/vectors", {"points": [{"id": 1, "vector": [0] * 4}]}),
    ("POST", f"/collections/{COLL}/points/batch", {"operations": []}),
    ("PUT", "/collections/new_one", {"vectors": {"size": 4, "distance": "Dot"}}),
    ("PATCH", f"/collections/{COLL}", {}),
    ("DELETE", f"/collections/{COLL}", None),
    ("DELETE", "/collections/missing", None),  # forbidden beats not-found, as in Qdrant
    ("POST", "/collections/aliases", {"actions": []}),
    ("PUT", f"/collections/{COLL}/index", {"field_name": "i", "field_schema": "integer"}),
    ("POST", f"/collections/{COLL}/snapshots", None),
    ("POST", f"/collections/{COLL}/snapshots?wait=false", None),
    ("DELETE", f"/collections/{COLL}/snapshots/{{snapshot}}", None),
    ("PUT", f"/collections/{COLL}/snapshots/recover", {"location": "file:///x.snapshot"}),
    ("POST", "/snapshots", None),
    ("DELETE", "/snapshots/x.snapshot", None),
]


@pytest.mark.parametrize("method,path,body", WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_read_only_key_cannot_write(secured: QuiverServer, method: str, path: str,
                                    body: Any) -> None:
    path = path.replace("{snapshot}", secured.snapshot)
    with _http(secured, **{"api-key": RO}) as c:
        r = c.request(method, path, json=body)
        assert r.status_code == 403
        assert r.json()["status"] == {"error": READ_ONLY}
        validate_response(method, path.split("?")[0], 403, r.json())
        # nothing changed
        assert c.post(f"/collections/{COLL}/points/count").json()["result"]["count"] == 20
        names = [s["name"] for s in c.get(f"/collections/{COLL}/snapshots").json()["result"]]
        assert names == [secured.snapshot]
        assert c.get("/collections/new_one/exists").json()["result"]["exists"] is False


def test_read_only_key_upload_is_plain_text_403(secured: QuiverServer) -> None:
    with _http(secured, **{"api-key": RO}) as c:
        r = c.post(f"/collections/{COLL}/snapshots/upload",
                   files={"snapshot": ("x.snapshot", b"not a tar")})
    assert r.status_code == 403 and r.text == READ_ONLY
    assert r.headers["content-type"].startswith("text/plain")


def test_qdrant_client_sees_401_and_403(secured: QuiverServer) -> None:
    point = models.PointStruct(id=5, vector=[1, 1, 1, 1])
    with pytest.raises(UnexpectedResponse) as exc:
        _client(secured, RO).upsert(COLL, [point])
    assert exc.value.status_code == 403
    # Qdrant's 401 is plain text, which its own OpenAPI (4XX: JSON) does not describe
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", INSECURE)
        plain = QdrantClient(url=secured.url, api_key="wrong", check_compatibility=False)
    with pytest.raises(UnexpectedResponse) as exc:
        plain.get_collections()
    assert exc.value.status_code == 401 and exc.value.content.decode() == BAD_KEY
    with pytest.raises(UnexpectedResponse) as exc:
        _client(secured, RO).create_snapshot(COLL)
    assert exc.value.status_code == 403


def test_manage_key_writes(secured: QuiverServer) -> None:
    client = _client(secured, KEY)
    client.create_collection("scratch", vectors_config=models.VectorParams(size=4,
                                                                           distance="Dot"))
    client.upsert("scratch", [models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    snap = client.create_snapshot("scratch")
    assert snap is not None and client.delete_snapshot("scratch", snap.name)
    with _http(secured, Authorization=f"Bearer {KEY}") as c:
        assert c.delete("/collections/scratch").json()["result"] is True


# --------------------------------------------------------------------------- before the body


class _DirWatch:
    """Polls directories every few ms and remembers every path that was not there at start."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.before = self._paths()
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _paths(self) -> set[str]:
        out = set()
        for d in self.dirs:
            for root, dirs, files in os.walk(d):
                out.update(os.path.join(root, n) for n in dirs + files)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= self._paths() - self.before
            time.sleep(0.005)

    def __enter__(self) -> _DirWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        self.seen |= self._paths() - self.before


def _slow_multipart(total: int, boundary: str = "quiverboundary") -> Iterator[bytes]:
    """A snapshot upload of `total` bytes, sent in 256 KiB pieces with pauses (the shape of
    Qdrant's GHSA-3v92-w72v-j994 regression test)."""
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; "
           f"filename=\"big.snapshot\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    piece = b"\0" * (256 << 10)
    for _ in range(total // len(piece)):
        yield piece
        time.sleep(0.002)
    yield f"\r\n--{boundary}--\r\n".encode()


def _upload(srv: QuiverServer, headers: dict[str, str], collection: str) -> httpx.Response:
    with _http(srv, **headers) as c:
        return c.post(f"/collections/{collection}/snapshots/upload",
                      content=_slow_multipart(8 << 20),
                      headers={"content-type": "multipart/form-data; boundary=quiverboundary"})


@pytest.mark.parametrize("headers,status", [
    ({}, 401), ({"api-key": "wrong"}, 401), ({"api-key": RO}, 403),
    ({"Authorization": f"Bearer {RO}"}, 403)])
def test_refused_upload_writes_nothing(secured: QuiverServer, headers: dict[str, str],
                                       status: int) -> None:
    with _DirWatch(secured.dirs) as watch:
        r = _upload(secured, headers, "uploaded")
    assert r.status_code == status
    assert watch.seen == set(), f"a refused upload touched the disk: {sorted(watch.seen)}"


def test_accepted_upload_is_seen_by_the_watch(secured: QuiverServer) -> None:
    """The control for the test above: the same upload with the full key does reach the disk
    (and then fails: it is not a snapshot)."""
    with _DirWatch(secured.dirs) as watch:
        r = _upload(secured, {"api-key": KEY}, "uploaded_ok")
    assert r.status_code >= 400
    assert watch.seen, "the watch saw nothing: it would not catch a refused upload either"


@pytest.mark.parametrize("key,status", [(None, 401), ("wrong", 401), (RO, 403), (KEY, None)])
def test_refusal_arrives_before_the_body(secured: QuiverServer, key: str | None,
                                         status: int | None) -> None:
    """Announce 64 MiB, send 64 KiB of a well-formed upload, and a refusal is already there:
    the server decided without waiting for the body. The control (the full key) gets no answer:
    that request is waiting for the rest of its body."""
    head = (f"POST /collections/{COLL}/snapshots/upload HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {64 << 20}\r\n")
    if key is not None:
        head += f"api-key: {key}\r\n"
    part = b'--b\r\nContent-Disposition: form-data; name="snapshot"; filename="x"\r\n\r\n'
    with socket.create_connection(("127.0.0.1", secured.port), timeout=10) as s:
        s.sendall(head.encode() + b"\r\n" + part + b"\0" * (64 << 10))
        if status is None:
            s.settimeout(1)
            with pytest.raises(TimeoutError):
                s.recv(4096)
            return
        answer = s.recv(4096)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]


# --------------------------------------------------------------------------- TLS


def _tls_env(pki: dict[str, str], **extra: str) -> dict[str, str]:
    return {"QUIVER__SERVICE__ENABLE_TLS": "true", "QUIVER__TLS__CERT": pki["server"],
            "QUIVER__TLS__KEY": pki["server-key"], "QUIVER__TLS__CA_CERT": pki["ca"], **extra}


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    return make_pki(tmp_path)


def test_https_with_api_key(tmp_path: Path, pki: dict[str, str]) -> None:
    trust = ssl.create_default_context(cafile=pki["ca"])
    srv = TlsServer(tmp_path / "storage", context=trust,
                    env=_tls_env(pki, QUIVER__SERVICE__API_KEY=KEY)).start()
    try:
        with httpx.Client(base_url=srv.url, verify=trust, timeout=30) as c:
            assert c.get("/healthz").status_code == 200
            assert c.get("/collections").status_code == 401
            r = c.get("/collections", headers={"api-key": KEY})
            assert r.status_code == 200 and r.json()["status"] == "ok"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # over https qdrant-client has nothing to warn about
            client = QdrantClient(url=srv.url, api_key=KEY, verify=trust,
                                  check_compatibility=False)
        client.create_collection("tls", vectors_config=models.VectorParams(size=2,
                                                                           distance="Dot"))
        client.upsert("tls", [models.PointStruct(id=1, vector=[1, 0])])
        assert client.count("tls").count == 1
        with pytest.raises(httpx.TransportError):  # plain http on the TLS port
            httpx.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused
            httpx.get(f"{srv.url}/healthz", timeout=5)
    finally:
        srv.stop()


def test_mutual_tls(tmp_path: Path, pki: dict[str, str]) -> None:
    with_cert = ssl.create_default_context(cafile=pki["ca"])
    with_cert.load_cert_chain(pki["client"], pki["client-key"])
    srv = TlsServer(tmp_path / "storage", context=with_cert,
                    env=_tls_env(pki, QUIVER__SERVICE__VERIFY_HTTPS_CLIENT_CERTIFICATE="true"))
    srv.start()
    try:
        assert httpx.get(f"{srv.url}/collections", verify=with_cert).status_code == 200
        without = ssl.create_default_context(cafile=pki["ca"])
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{srv.url}/collections", verify=without, timeout=5)
    finally:
        srv.stop()


def test_tls_without_certificate_fails_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "QUIVER__GPU__ENABLED": "false", "QUIVER__SERVICE__ENABLE_TLS": "true",
           "QUIVER__TLS__CERT": str(tmp_path / "missing.pem")}
    out = subprocess.run(quiver_command() + ["serve", "--storage-path", str(tmp_path / "s")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "tls.cert" in out.stderr
