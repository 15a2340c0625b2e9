"""Bounded loopback load test: 32 concurrent clients against the real server.

32 threads (one httpx client each) mix upserts (wait=true), queries, scrolls and retrieves;
one more creates a snapshot every 10 s (every 5 s in the 10-second run). Requirements: zero
failed requests (every response 200, no transport error), every acknowledged point present
afterwards with its exact vector, and the point count exact. Reported: requests,
throughput, p50/p99 latency overall and per operation, server RSS growth, open file
descriptors before and after (via /metrics).

The default test runs 10 s; the `slow` variant 120 s. A third of the queries carry a payload
filter (this mix found filtered reads failing while writes ran: tests/test_filter_race.py).
"""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from server import QuiverServer
from slow import require_slow

DIM = 32
CLIENTS = 32
PREFILL = 5000


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000 if values else 0.0


def run_load(tmp_path: Path, seconds: float, capsys: pytest.CaptureFixture[str],
             record_property) -> dict:
    srv = QuiverServer(tmp_path / "storage",
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    lock = threading.Lock()
    latencies: dict[str, list[float]] = {"upsert": [], "query": [], "scroll": [],
                                         "retrieve": [], "snapshot": []}
    failures: list[str] = []
    acked: dict[int, np.ndarray] = {}
    try:
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            assert http.put("/collections/load", json={
                "vectors": {"size": DIM, "distance": "Euclid"}}).status_code == 200
            for s in range(0, PREFILL, 1000):
                vecs = rng.standard_normal((1000, DIM)).astype(np.float32)
                r = http.put("/collections/load/points", params={"wait": "true"}, json={
                    "points": [{"id": i, "vector": v.tolist(), "payload": {"g": i % 10}}
                               for i, v in zip(range(s, s + 1000), vecs, strict=True)]})
                assert r.status_code == 200
                acked.update(zip(range(s, s + 1000), vecs, strict=True))
            http.post("/collections/load/points/query", json={"query": [0.0] * DIM})
            fds_before = _metric(http.get("/metrics").text, "process_open_fds")
        rss_before = srv.memory()["VmRSS"]
        deadline = time.monotonic() + seconds

        def timed(kind: str, c: httpx.Client, method: str, url: str,
                  **kw) -> httpx.Response | None:
            t = time.perf_counter()
            try:
                r = c.request(method, url, **kw)
            except httpx.HTTPError as exc:
                with lock:
                    failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                return None
            dt = time.perf_counter() - t
            with lock:
                latencies[kind].append(dt)
                if r.status_code != 200:
                    failures.append(f"{kind}: {r.status_code} {r.text[:200]}")
            return r

        def client(t: int) -> None:
            prng = random.Random(t)
            nrng = np.random.default_rng(t + 100)
            next_id = 1_000_000 * (t + 1)
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                while time.monotonic() < deadline:
                    x = prng.random()
                    if x < 0.3:
                        ids = list(range(next_id, next_id + 10))
                        next_id += 10
                        vecs = nrng.standard_normal((10, DIM)).astype(np.float32)
                        r = timed("upsert", c, "PUT", "/collections/load/points",
                                  params={"wait": "true"}, json={"points": [
                                      {"id": i, "vector": v.tolist(), "payload": {"g": t}}
                                      for i, v in zip(ids, vecs, strict=True)]})
                        if r is not None and r.status_code == 200:
                            with lock:
                                acked.update(zip(ids, vecs, strict=True))
                    elif x < 0.75:
                        flt = {"must": [{"key": "g", "match": {"value": t % 10}}]} \
                            if prng.random() < 0.3 else None
                        timed("query", c, "POST", "/collections/load/points/query", json={
                            "query": nrng.standard_normal(DIM).tolist(), "limit": 10,
                            "filter": flt})
                    elif x < 0.95:
                        timed("scroll", c, "POST", "/collections/load/points/scroll", json={
                            "limit": 50, "offset": prng.randrange(PREFILL),
                            "with_payload": True})
                    else:
                        timed("retrieve", c, "POST", "/collections/load/points", json={
                            "ids": [prng.randrange(PREFILL) for _ in range(20)],
                            "with_vector": True})

        def snapshotter() -> None:  # at 10 s, 20 s, ... (5 s in the 10-second run)
            every = min(10.0, seconds / 2)
            due = time.monotonic() + every
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                while True:
                    time.sleep(max(0.0, due - time.monotonic()))
                    if time.monotonic() >= deadline:
                        break
                    timed("snapshot", c, "POST", "/collections/load/snapshots")
                    due += every

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(t,)) for t in range(CLIENTS)]
        threads.append(threading.Thread(target=snapshotter))
        for th in threads:
            th.start()
        for th in threads:
            th.join(seconds + 300)
        elapsed = time.monotonic() - started
        rss_after = srv.memory()["VmRSS"]
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            ids = sorted(acked)
            for s in range(0, len(ids), 2000):
                part = ids[s: s + 2000]
                r = http.post("/collections/load/points", json={"ids": part, "with_vector": True})
                got = {p["id"]: p["vector"] for p in r.json()["result"]}
                assert sorted(got) == part, f"{len(set(part) - set(got))} acked points missing"
                for i in part:
                    assert np.array_equal(np.asarray(got[i], np.float32), acked[i])
            count = http.post("/collections/load/points/count",
                              json={"exact": True}).json()["result"]["count"]
            assert count == len(acked)
            metrics = http.get("/metrics").text
            fds_after = _metric(metrics, "process_open_fds")
        served = sum(float(v) for v in re.findall(
            r'^quiver_http_requests_total\{[^}]*route="/collections/\{collection_name\}/points'
            r'[^"]*"[^}]*\} (\S+)$', metrics, re.M))
    finally:
        srv.stop()
    every = [x for v in latencies.values() for x in v]
    figures = {
        "seconds": round(elapsed, 1), "clients": CLIENTS, "requests": len(every),
        "failed": len(failures), "rps": round(len(every) / elapsed, 1),
        "p50_ms": round(_pct(every, 50), 1), "p99_ms": round(_pct(every, 99), 1),
        **{f"p99_{k}_ms": round(_pct(v, 99), 1) for k, v in latencies.items() if v},
        **{f"n_{k}": len(v) for k, v in latencies.items()},
        "points": len(acked), "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_after_mb": round(rss_after / 2**20, 1),
        "rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
        "fds_before": int(fds_before), "fds_after": int(fds_after),
    }
    for k, v in figures.items():
        record_property(k, v)
    with capsys.disabled():
        print(f"\nload test: {figures}")
    assert failures == [], failures[:10]
    assert figures["requests"] > 0 and latencies["upsert"] and latencies["query"]
    assert served >= len(every) - len(latencies["snapshot"])  # /metrics counted them all
    assert fds_after <= fds_before + 8, "file descriptors leak under load"
    assert rss_after - rss_before < 1 << 30, "RSS grew by more than 1 GiB"
    return figures


def test_load_short(tmp_path: Path, capsys: pytest.CaptureFixture[str], record_property) -> None:
    run_load(tmp_path, 10, capsys, record_property)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_load_long(request: pytest.FixtureRequest, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str], record_property) -> None:
    require_slow(request)
    figures = run_load(tmp_path, 120, capsys, record_property)
    assert figures["n_snapshot"] >= 9
