"""The request path's fast lanes keep every feature: direct dispatch answers as FastAPI's
stack would, cheap reads run inline on the event loop and give the same results as in the
thread pool, the access-log quoting is the JSON quoting it replaces."""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from ranking import assert_same_ranking

with warnings.catch_warnings():  # "install httpx2": the httpx-based client works as it is
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from starlette.requests import Request

from api import http as H
from api.app import create_app
from api.observability import _q
from api.settings import load_settings

DIM = 8


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(env={}, overrides={"storage": {
        "storage_path": str(tmp_path / "storage"), "snapshots_path": str(tmp_path / "snaps")}})
    with TestClient(create_app(settings)) as c:
        yield c


def _strip_time(body: bytes) -> Any:
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict):
        doc.pop("time", None)
    return doc


def test_direct_dispatch_answers_as_the_fastapi_stack(app_client: TestClient) -> None:
    """Every request below, through the front (direct dispatch where it applies) and through
    FastAPI's own stack alone: same status, body (but `time`) and content type."""
    app = app_client.app
    stack = TestClient(app.stack)  # type: ignore[attr-defined]  # no lifespan: shared app
    rng = np.random.default_rng(16)
    assert app_client.put("/collections/d", json={
        "vectors": {"size": DIM, "distance": "Cosine"}}).status_code == 200
    pts = [{"id": i, "vector": rng.standard_normal(DIM).tolist(), "payload": {"n": i}}
           for i in range(20)]
    assert app_client.put("/collections/d/points?wait=true",
                          json={"points": pts}).status_code == 200
    q = rng.standard_normal(DIM).tolist()
    cases: list[tuple[str, str, Any]] = [
        ("GET", "/", None), ("GET", "/healthz", None), ("GET", "/readyz", None),
        ("GET", "/livez", None), ("HEAD", "/healthz", None), ("POST", "/healthz", None),
        ("GET", "/collections", None), ("GET", "/collections/d", None),
        ("GET", "/collections/missing", None),
        ("POST", "/collections/d/points/query", {"query": q, "limit": 5}),
        ("POST", "/collections/d/points/query", {"query": q[:3]}),
        ("POST", "/collections/d/points/query", b"{not json"),
        ("POST", "/collections/d/points/query", [1, 2]),
        ("POST", "/collections/missing/points/query", {"query": q}),
        ("POST", "/collections/d/points/search", {"vector": q, "limit": 3}),
        ("POST", "/collections/d/points/count", {"exact": True}),
        ("POST", "/collections/d/points/scroll", {"limit": 4, "with_payload": True}),
        ("POST", "/collections/d/points", {"ids": [1, 2, 99]}),
        ("GET", "/collections/d/points/3", None), ("GET", "/collections/d/points/999", None),
        ("GET", "/collections/d/points/query", None),  # 405 → Qdrant's envelope
        ("DELETE", "/collections/d/points/query", None),
        ("GET", "/no/such/endpoint", None),
        ("POST", "/collections/d/shards", {}),  # a Qdrant operation Quiver does not serve
        ("GET", "/telemetry", None),
    ]
    for method, path, body in cases:
        kw: dict[str, Any] = {}
        if isinstance(body, bytes):
            kw["content"] = body
        elif body is not None:
            kw["json"] = body
        a = app_client.request(method, path, **kw)
        b = stack.request(method, path, **kw)
        what = f"{method} {path} {body!r:.40}"
        assert a.status_code == b.status_code, what
        assert a.headers.get("content-type") == b.headers.get("content-type"), what
        if path != "/telemetry":  # uptime moves
            assert _strip_time(a.content) == _strip_time(b.content), what
        # the front's stamps, on direct and fallback routes alike
        assert a.headers["x-quiver-version"] and len(a.headers["x-request-id"]) == 32, what
        assert a.headers.get_list("x-request-id") == [a.headers["x-request-id"]], what


def test_paths_are_normalised_before_direct_dispatch(app_client: TestClient) -> None:
    assert app_client.put("/collections/n", json={
        "vectors": {"size": DIM, "distance": "Dot"}}).status_code == 200
    body = {"query": [1.0] * DIM, "limit": 1}
    for path in ("/collections///n/points/query", "/collections//n/points/query/",
                 "/collections/n/points/query//"):
        r = app_client.post(path, json=body)
        assert r.status_code == 200 and r.json()["result"] == {"points": []}, path
    assert app_client.get("/healthz/").text == "healthz check passed"


def _oracle(points: list[dict[str, Any]]) -> QdrantClient:
    o = QdrantClient(":memory:")
    o.create_collection("o", vectors_config=models.VectorParams(size=DIM,
                                                                distance=models.Distance.COSINE))
    o.upsert("o", points=[models.PointStruct(**p) for p in points])
    return o


def test_inline_reads_match_the_oracle_while_writes_run(http: httpx.Client,
                                                         collection_name: str) -> None:
    """A small collection is read inline (cheap) and, while another client upserts into it,
    in the pool (its lock is busy): the answers are the oracle's either way."""
    rng = np.random.default_rng(7)
    name = collection_name
    assert http.put(f"/collections/{name}", json={
        "vectors": {"size": DIM, "distance": "Cosine"}}).status_code == 200
    points = [{"id": i, "vector": rng.standard_normal(DIM).tolist(), "payload": {"n": i}}
              for i in range(10)]
    assert http.put(f"/collections/{name}/points?wait=true",
                    json={"points": points}).status_code == 200
    oracle = _oracle(points)
    queries = rng.standard_normal((30, DIM))

    def check_all() -> None:
        for q in queries:
            got = http.post(f"/collections/{name}/points/query",
                            json={"query": q.tolist(), "limit": 5}).json()["result"]["points"]
            got = [SimpleNamespace(**p) for p in got]
            want = oracle.query_points("o", query=q.tolist(), limit=5).points
            assert_same_ranking(got, want)
            n = http.post(f"/collections/{name}/points/count", json={"exact": True})
            assert n.json()["result"]["count"] == 10

    check_all()
    stop = threading.Event()
    far = [{"id": 1000 + i, "vector": [0.0] * DIM} for i in range(200)]  # zero: never ranked

    def writer() -> None:
        with httpx.Client(base_url=http.base_url, timeout=30) as w:
            while not stop.is_set():
                w.put(f"/collections/{name}/points?wait=true", json={"points": far})
                w.post(f"/collections/{name}/points/delete?wait=true",
                       json={"points": [p["id"] for p in far]})

    t = threading.Thread(target=writer)
    t.start()
    try:
        for q in queries:
            got = http.post(f"/collections/{name}/points/query",
                            json={"query": q.tolist(), "limit": 5,
                                  "filter": {"must": [{"key": "n", "range": {"lt": 100}}]}}
                            ).json()["result"]["points"]
            got = [SimpleNamespace(**p) for p in got]
            want = oracle.query_points("o", query=q.tolist(), limit=5).points
            assert_same_ranking(got, want)
    finally:
        stop.set()
        t.join()
    check_all()


# ---- the inline gate, in process ------------------------------------------------------------


class _Lock:
    def __init__(self) -> None:
        self.held = False

    def acquire(self, blocking: bool = True) -> bool:
        return not self.held

    def release(self) -> None:
        pass


def _request(coll: Any) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(catalog=SimpleNamespace(get=lambda name: coll)))
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b"",
             "path_params": {"collection_name": "c"}, "app": app}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}
    return Request(scope, receive)


def _call(run: Any, request: Request) -> Any:
    import asyncio  # noqa: PLC0415

    return asyncio.run(run(request))


def test_inline_gate_runs_cheap_reads_on_the_loop_and_the_rest_in_the_pool(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(H, "INLINE_BUDGET_S", 0.05)  # far above a busy machine's noise
    main = threading.get_ident()
    where: list[bool] = []
    delay = {"s": 0.0}

    def handler(request: Request, body: Any) -> dict[str, Any]:
        where.append(threading.get_ident() == main)
        time.sleep(delay["s"])
        return {"ok": True}

    coll = SimpleNamespace(write_lock=_Lock(), segments=[SimpleNamespace(on_device=False)])
    run = H.endpoint(handler, inline=True)
    req = _request(coll)
    assert json.loads(_call(run, req).body)["result"] == {"ok": True}
    assert where == [False]  # no cost known yet: the pool measures it
    _call(run, req)
    assert where[-1] is True  # cheap: on the loop
    coll.write_lock.held = True  # a writer holds the collection
    _call(run, req)
    assert where[-1] is False
    coll.write_lock.held = False
    coll.segments[0].on_device = True  # device searches coalesce across threads
    _call(run, req)
    assert where[-1] is False
    coll.segments[0].on_device = False
    delay["s"] = 4 * H.INLINE_BUDGET_S  # now expensive: back to the pool until it decays
    _call(run, req)
    assert where[-1] is True  # it was cheap when this one started
    delay["s"] = 0.0
    pooled = 0
    for _ in range(20):
        _call(run, req)
        pooled += not where[-1]
    assert 1 <= pooled <= 5 and where[-1] is True
    plain = H.endpoint(handler)  # not marked inline: always the pool
    for _ in range(3):
        _call(plain, req)
        assert where[-1] is False


def test_inline_errors_answer_in_the_envelope() -> None:
    from engine.errors import BadRequest  # noqa: PLC0415

    calls = {"n": 0}

    def handler(request: Request, body: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:
            raise BadRequest("nope") if calls["n"] == 2 else RuntimeError("boom")
        return 1

    coll = SimpleNamespace(write_lock=_Lock(), segments=[])
    run = H.endpoint(handler, inline=True)
    req = _request(coll)
    assert _call(run, req).status_code == 200
    r = _call(run, req)  # inline now
    assert r.status_code == 400 and json.loads(r.body)["status"]["error"].endswith("nope")
    r = _call(run, req)
    assert r.status_code == 500 and "unexpected server error" in json.loads(r.body)[
        "status"]["error"]


def test_an_inline_read_never_waits_for_the_write_lock(app_client: TestClient,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer the gate cannot see (gRPC, the indexer, the flusher) takes the collection's
    write lock between the gate's check and the read's view: the read moves to the pool and
    waits there, the loop keeps serving (/healthz), and the read answers once the lock is free,
    as it would have without the writer."""
    monkeypatch.setattr(H, "INLINE_BUDGET_S", 0.05)  # far above a busy machine's noise
    rng = np.random.default_rng(17)
    assert app_client.put("/collections/w", json={
        "vectors": {"size": DIM, "distance": "Dot"}}).status_code == 200
    pts = [{"id": i, "vector": rng.standard_normal(DIM).tolist()} for i in range(30)]
    assert app_client.put("/collections/w/points?wait=true",
                          json={"points": pts}).status_code == 200
    body = {"query": rng.standard_normal(DIM).tolist(), "limit": 5}
    expected = [app_client.post("/collections/w/points/query", json=body).json()["result"]
                for _ in range(3)][-1]  # the gate now knows the read is cheap
    lock = app_client.app.state.catalog.get("w").write_lock  # type: ignore[attr-defined]
    taken, release, done = threading.Event(), threading.Event(), threading.Event()
    inline_tries: list[str] = []

    def writer() -> None:
        with lock:
            taken.set()
            release.wait(30)

    allows = H.InlineGate.allows

    def racing_allows(self: H.InlineGate, request: Request) -> str | None:
        key = allows(self, request)
        if key == "w" and not inline_tries:  # the writer slips in right after the check
            inline_tries.append(key)
            threading.Thread(target=writer, daemon=True).start()
            assert taken.wait(10)
        return key

    monkeypatch.setattr(H.InlineGate, "allows", racing_allows)
    answer: dict[str, Any] = {}

    def read() -> None:
        answer["r"] = app_client.post("/collections/w/points/query", json=body)
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        assert taken.wait(10) and inline_tries == ["w"]
        health: dict[str, Any] = {}
        probe = threading.Thread(target=lambda: health.update(r=app_client.get("/healthz")),
                                 daemon=True)
        probe.start()
        probe.join(5)  # the loop is not stuck behind the lock (a stuck one: fails, not hangs)
        assert "r" in health and health["r"].status_code == 200
        assert not done.is_set()  # the read waits in the pool for the writer
    finally:
        release.set()
    reader.join(30)
    r = answer["r"]
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.json()["result"] == expected


def test_log_quoting_is_json_quoting() -> None:
    rng = np.random.default_rng(3)
    samples = ["", "/collections/a/points", 'a"b', "a\\b", "x\ny", "\x7f", "é", "/c/\u2028",
               "GET", "\t"]
    alphabet = [chr(c) for c in range(0, 0x180)]
    samples += ["".join(rng.choice(alphabet, size=int(rng.integers(0, 20))))
                for _ in range(500)]
    for s in samples:
        assert _q(s) == json.dumps(s, ensure_ascii=True), repr(s)
