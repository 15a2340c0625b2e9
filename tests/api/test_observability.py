"""/metrics (Prometheus text), x-request-id, structured access and error logs."""

from __future__ import annotations

import logging
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server import QuiverServer

with warnings.catch_warnings():  # "install httpx2": the httpx-based client works as it is
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from api import observability as obs
from api.app import create_app
from api.settings import load_settings

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
                    r'(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?'
                    r" (-?[0-9.e+-]+|NaN|[+-]Inf)$")
ROUTE_POINTS = "/collections/{collection_name}/points"


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader of the text exposition format: every line a comment or a sample,
    every sample's family declared by # TYPE first, histograms cumulative."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in types, f"{name} declared twice"
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.setdefault(name, []).append((labels, float(m.group(3))))
    for name, kind in types.items():
        if kind != "histogram":
            continue
        series: dict[tuple, list[float]] = {}
        for labels, v in out.get(name + "_bucket", []):
            key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            series.setdefault(key, []).append(v)
        counts = {tuple(sorted(lb.items())): v for lb, v in out.get(name + "_count", [])}
        for key, buckets in series.items():
            assert buckets == sorted(buckets), f"{name}{key}: buckets not cumulative"
            assert buckets[-1] == counts[key], f"{name}{key}: +Inf bucket != count"
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    hits = [v for lb, v in metrics.get(name, []) if all(lb.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, metrics.get(name))
    return hits[0]


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(env={}, overrides={"storage": {
        "storage_path": str(tmp_path / "storage"), "snapshots_path": str(tmp_path / "snaps")}})
    with TestClient(create_app(settings)) as c:
        yield c


def test_metrics_by_route_template_and_status(app_client: TestClient) -> None:
    c = app_client
    assert c.put("/collections/obs_a", json={"vectors": {"size": 2, "distance": "Dot"}}
                 ).status_code == 200
    c.put("/collections/obs_b", json={"vectors": {"size": 2, "distance": "Dot"}})
    for name in ("obs_a", "obs_b"):
        r = c.put(f"/collections/{name}/points?wait=true", json={"points": [
            {"id": i, "vector": [i, 1]} for i in range(5 if name == "obs_a" else 3)]})
        assert r.status_code == 200
    assert c.post("/collections/missing/points", json={"ids": [1]}).status_code == 404
    assert c.get("/no/such/endpoint").status_code == 404
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = parse(r.text)
    assert value(m, "quiver_http_requests_total", method="PUT", route=ROUTE_POINTS,
                 status="200") == 2
    assert value(m, "quiver_http_requests_total", method="POST", route=ROUTE_POINTS,
                 status="404") == 1
    assert value(m, "quiver_http_requests_total", method="GET", route="(unmatched)",
                 status="404") == 1
    assert value(m, "quiver_http_request_duration_seconds_count", method="PUT",
                 route=ROUTE_POINTS, status="200") == 2
    routes = {lb["route"] for lb, _ in m["quiver_http_requests_total"]}
    assert not [r for r in routes if "obs_" in r or "missing" in r], routes  # templates only
    assert value(m, "quiver_collection_points", collection="obs_a") == 5
    assert value(m, "quiver_collection_points", collection="obs_b") == 3
    assert value(m, "quiver_collection_segments", collection="obs_a") >= 1
    assert value(m, "quiver_collection_unflushed_operations", collection="obs_a") == 1
    assert value(m, "quiver_collections") == 2
    for name in ("quiver_device_memory_used_bytes", "quiver_device_memory_limit_bytes",
                 "quiver_device_resident_segments", "quiver_index_builds_total",
                 "process_resident_memory_bytes", "process_open_fds"):
        assert name in m, name
    assert value(m, "process_resident_memory_bytes") > 0
    anon = parse(c.get("/metrics?anonymize=true").text)
    assert "obs_a" not in str(anon["quiver_collection_points"])
    assert sorted(v for _, v in anon["quiver_collection_points"]) == [3, 5]


def test_snapshot_metrics(app_client: TestClient) -> None:
    c = app_client
    c.put("/collections/s", json={"vectors": {"size": 2, "distance": "Dot"}})
    c.put("/collections/s/points?wait=true", json={"points": [{"id": 1, "vector": [1, 2]}]})
    sizes = [c.post("/collections/s/snapshots").json()["result"]["size"] for _ in range(2)]
    full = c.post("/snapshots").json()["result"]["size"]
    assert c.post("/collections/nope/snapshots").status_code == 404
    m = parse(c.get("/metrics").text)
    assert value(m, "quiver_snapshot_creations_total", kind="collection", outcome="ok") == 2
    assert value(m, "quiver_snapshot_creations_total", kind="collection", outcome="error") == 1
    assert value(m, "quiver_snapshot_creations_total", kind="full", outcome="ok") == 1
    assert value(m, "quiver_snapshot_created_bytes_total", kind="collection") == sum(sizes)
    assert value(m, "quiver_snapshot_created_bytes_total", kind="full") == full
    assert value(m, "quiver_snapshot_create_duration_seconds_count", kind="collection",
                 outcome="ok") == 2
    assert value(m, "quiver_snapshots_stored", collection="s") == 2
    assert value(m, "quiver_snapshots_stored_bytes", collection="s") == sum(sizes)


def test_request_id_header(app_client: TestClient) -> None:
    c = app_client
    r = c.get("/collections")
    rid = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert c.get("/collections").headers["x-request-id"] != rid  # one per request
    mine = "trace-" + uuid.uuid4().hex
    assert c.get("/collections", headers={"x-request-id": mine}).headers["x-request-id"] == mine
    for bad in ("a b", "x" * 200, 'quote"d', ""):  # not a token: replaced, never echoed
        got = c.get("/collections", headers={"x-request-id": bad}).headers["x-request-id"]
        assert got != bad and re.fullmatch(r"[0-9a-f]{32}", got)
    r = c.get("/collections/none")
    assert r.status_code == 404 and r.headers["x-request-id"]
    r = c.post("/collections/x/points", content=b"{bad json")
    assert r.status_code in (400, 404) and r.headers["x-request-id"]
    assert r.headers.get_list("x-request-id") == [r.headers["x-request-id"]]


def test_error_log_lines_carry_the_request_id(app_client: TestClient,
                                              caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    c = app_client
    c.put("/collections/e", json={"vectors": {"size": 2, "distance": "Dot"}})
    catalog = c.app.state.catalog  # type: ignore[attr-defined]

    def boom(name: str):
        raise RuntimeError("injected failure")
    monkeypatch.setattr(catalog, "get", boom)
    with caplog.at_level(logging.INFO):
        r = c.post("/collections/e/points/count", json={}, headers={"x-request-id": "req-500"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "req-500"
    assert r.json()["status"]["error"]
    records = [rec for rec in caplog.records if "req-500" in rec.getMessage()]
    # the traceback record of the handler and the access error line both carry the id
    assert any(rec.name == "quiver.http" and rec.exc_info for rec in records), records
    access = [rec for rec in records if rec.name == "quiver.access"]
    assert len(access) == 1 and access[0].levelno == logging.ERROR
    line = access[0].getMessage()
    assert 'route="/collections/{collection_name}/points/count"' in line and "status=500" in line
    assert 'error="Service internal error: unexpected server error"' in line
    assert all(getattr(rec, "request_id", None) == "req-500" for rec in records)


def _access_records(caplog: pytest.LogCaptureFixture, n: int,
                    timeout: float = 10.0) -> list[logging.LogRecord]:
    """The quiver.access records once n have arrived (they come in batches, at most
    ACCESS_FLUSH_S after their request, on the app's running loop)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in caplog.records if r.name == "quiver.access"]
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.01)


def test_access_log_line(app_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="quiver.access"):
        app_client.get("/collections/x%0aforged?api_key=secret",
                       headers={"x-request-id": "req-1"})
        lines = [r.getMessage() for r in _access_records(caplog, 1)]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith('request_id=req-1 method="GET" '
                           'route="/collections/{collection_name}"')
    assert "status=404" in line and "duration_ms=" in line
    assert "\n" not in line and "secret" not in line  # no forged lines, no query strings


def test_access_lines_are_batched_in_order_with_their_requests_time_and_id(
        app_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Lines reach the handlers after their response (AccessLog), within ACCESS_FLUSH_S,
    in request order, each dated when its request ended and carrying its id."""
    c = app_client
    with caplog.at_level(logging.INFO, logger="quiver.access"):
        sent = []
        for i in range(5):
            before = time.time()
            assert c.get("/healthz", headers={"x-request-id": f"b-{i}"}).status_code == 200
            sent.append((before, time.time()))
        recs = _access_records(caplog, 5)
    assert [r.request_id for r in recs] == [f"b-{i}" for i in range(5)]  # type: ignore[attr-defined]
    assert [r.getMessage().split()[0] for r in recs] == [f"request_id=b-{i}" for i in range(5)]
    for rec, (before, after) in zip(recs, sent, strict=True):
        assert before - 0.01 <= rec.created <= after + 0.01, (rec.created, before, after)
        assert rec.levelno == logging.INFO and 'route="/healthz"' in rec.getMessage()


def test_a_5xx_line_goes_out_at_once_after_the_pending_lines(
        app_client: TestClient, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = app_client
    c.put("/collections/e", json={"vectors": {"size": 2, "distance": "Dot"}})
    monkeypatch.setattr(obs, "ACCESS_FLUSH_S", 60.0)  # nothing drains on its own now
    catalog = c.app.state.catalog  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="quiver.access"):
        time.sleep(2 * 0.05)  # the PUT's own batch is out
        caplog.clear()
        c.get("/healthz", headers={"x-request-id": "before-500"})
        assert _access_records(caplog, 1, timeout=0.3) == []  # pending

        def boom(name: str) -> None:
            raise RuntimeError("injected failure")
        monkeypatch.setattr(catalog, "get", boom)
        r = c.post("/collections/e/points/count", json={}, headers={"x-request-id": "the-500"})
        assert r.status_code == 500
        ids = [rec.request_id for rec in _access_records(caplog, 2)]  # type: ignore[attr-defined]
    assert ids == ["before-500", "the-500"]


def test_pending_access_lines_are_written_at_shutdown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(obs, "ACCESS_FLUSH_S", 60.0)
    settings = load_settings(env={}, overrides={"storage": {
        "storage_path": str(tmp_path / "storage"), "snapshots_path": str(tmp_path / "snaps")}})
    with caplog.at_level(logging.INFO, logger="quiver.access"):
        with TestClient(create_app(settings)) as c:
            for i in range(3):
                c.get("/healthz", headers={"x-request-id": f"s-{i}"})
            assert [r for r in caplog.records if r.name == "quiver.access"] == []
        ids = [r.request_id for r in caplog.records  # type: ignore[attr-defined]
               if r.name == "quiver.access"]
    assert ids == ["s-0", "s-1", "s-2"]


def test_a_burst_drains_in_slices(monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    """More lines than ACCESS_SLICE: the timer emits one slice, the rest follow in later
    loop iterations (other work may run between), all in order."""
    import asyncio  # noqa: PLC0415

    monkeypatch.setattr(obs, "ACCESS_FLUSH_S", 0.0)
    monkeypatch.setattr(obs, "ACCESS_SLICE", 4)
    log = obs.AccessLog()
    seen_between: list[int] = []

    async def main() -> None:
        for i in range(10):
            log.add((time.time(), f"r-{i}", "GET", "/healthz", "/healthz", 200, 0.001, "c"))
        while log.pending or log.timer is not None:
            seen_between.append(len([r for r in caplog.records if r.name == "quiver.access"]))
            await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, logger="quiver.access"):
        asyncio.run(main())
        ids = [r.request_id for r in caplog.records  # type: ignore[attr-defined]
               if r.name == "quiver.access"]
    assert ids == [f"r-{i}" for i in range(10)]
    assert 4 in seen_between and 8 in seen_between  # slices, with loop turns between


def test_metrics_need_a_key_and_read_only_may_read(tmp_path: Path) -> None:
    srv = QuiverServer(tmp_path / "storage", env={
        "QUIVER__SERVICE__API_KEY": "k-manage", "QUIVER__SERVICE__READ_ONLY_API_KEY": "k-read",
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    try:
        r = httpx.get(srv.url + "/metrics")
        assert r.status_code == 401 and r.headers["x-request-id"]
        assert httpx.get(srv.url + "/metrics", headers={"api-key": "wrong"}).status_code == 401
        r = httpx.get(srv.url + "/metrics", headers={"api-key": "k-read"})
        assert r.status_code == 200
        r = httpx.get(srv.url + "/metrics", headers={"authorization": "Bearer k-manage"})
        assert r.status_code == 200
        m = parse(r.text)
        assert value(m, "quiver_http_requests_total", method="GET", route="/metrics",
                     status="401") == 2
        assert value(m, "quiver_http_requests_total", method="GET", route="/metrics",
                     status="200") == 1
        # the access log of the real server carries the id the client sent
        httpx.get(srv.url + "/collections", headers={"api-key": "k-read",
                                                     "x-request-id": "from-client-42"})
        line = re.compile(r'request_id=from-client-42 method="GET" route="/collections" '
                          r'path="/collections" status=200')
        deadline = time.monotonic() + 10  # lines are written in batches (AccessLog)
        while not line.search(srv.log()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert line.search(srv.log()), srv.log()
    finally:
        srv.stop()
