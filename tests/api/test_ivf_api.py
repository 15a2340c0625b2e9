"""gpu.faiss_index=ivf_flat through the real server (faiss-cpu: the path CI has): searches
go through IVF segments with recall close to exact; a snapshot recovers and a restart
reattaches the index without retraining (telemetry `quiver.ivf_trainings` counts trainings)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import hostile_archives as H
import httpx
import numpy as np
import pytest
from server import QuiverServer
from validating_http import ValidatingClient

from engine import ivf

pytestmark = pytest.mark.skipif(ivf.faiss is None, reason="faiss is not installed")
DIM, N = 16, 3000


@pytest.fixture
def ivf_server(tmp_path: Path) -> Iterator[QuiverServer]:
    srv = QuiverServer(tmp_path / "storage", env={
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps"),
        "QUIVER__GPU__FAISS_INDEX": "ivf_flat", "QUIVER__GPU__NPROBE": "16"}).start()
    yield srv
    srv.stop()


def _trainings(http: httpx.Client) -> int:
    """IVF trainings in the server process since it started (counted before an index is
    adopted, so before indexed_vectors_count shows it; the log line comes after)."""
    return int(http.get("/telemetry").json()["result"]["quiver"]["ivf_trainings"])


def _wait_indexed(http: httpx.Client, name: str, rows: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = http.get(f"/collections/{name}").json()["result"]
        if info["indexed_vectors_count"] >= rows:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name}: only {info['indexed_vectors_count']} of {rows} indexed")


def _search(http: httpx.Client, name: str, q: np.ndarray, exact: bool) -> list[list[int]]:
    body = {"searches": [{"vector": v.tolist(), "limit": 10, "params": {"exact": exact}}
                         for v in q]}
    r = http.post(f"/collections/{name}/points/search/batch", json=body)
    assert r.status_code == 200, r.text
    return [[p["id"] for p in res] for res in r.json()["result"]]


def _recall(got: list[list[int]], want: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want,
                                                                       strict=True)]))


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _hostile_ivf(valid: bytes) -> dict[str, bytes]:
    """Internally consistent archives (manifest sizes/sha256 updated) whose IVF arrays lie."""
    entries = H.parse(valid)
    meta = np.load(io.BytesIO(entries[H.find(entries, "-meta.npy")].data))
    coarse = np.load(io.BytesIO(entries[H.find(entries, "-coarse.npy")].data))
    nan = coarse.copy()
    nan[0, 0] = np.nan
    huge = meta.copy()
    huge[1] = 1 << 40  # nlist: would size a huge allocation if trusted
    pq_layout = meta.copy()
    pq_layout[0], pq_layout[3], pq_layout[4] = 1, 4, 30  # IVF-PQ with 2^30 codewords
    blob = np.frombuffer(b"IwFl" + bytes(200), np.uint8)  # a faiss blob is not accepted
    return {
        "nan centroids": H.serialise(H.replace_data(entries, "-coarse.npy", _npy(nan))),
        "int centroids": H.serialise(H.replace_data(entries, "-coarse.npy",
                                                    _npy(coarse.astype(np.int32)))),
        "short centroids": H.serialise(H.replace_data(entries, "-coarse.npy",
                                                      _npy(coarse[:-1]))),
        "faiss blob": H.serialise(H.replace_data(entries, "-coarse.npy", _npy(blob))),
        "huge nlist": H.serialise(H.replace_data(entries, "-meta.npy", _npy(huge))),
        "unknown kind": H.serialise(H.replace_data(
            entries, "-meta.npy", _npy(np.array([7, *meta[1:]], np.int64)))),
        "pq layout": H.serialise(H.replace_data(entries, "-meta.npy", _npy(pq_layout))),
        "short meta": H.serialise(H.replace_data(entries, "-meta.npy", _npy(meta[:3]))),
    }


def test_ivf_segments_search_snapshot_recover_and_restart(ivf_server: QuiverServer) -> None:
    srv = ivf_server
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((25, DIM)) * 3
    x = (centers[rng.integers(0, 25, N)] + rng.standard_normal((N, DIM))).astype(np.float32)
    q = (centers[rng.integers(0, 25, 20)] + rng.standard_normal((20, DIM))).astype(np.float32)
    with ValidatingClient(base_url=srv.url, timeout=60) as http:
        r = http.put("/collections/ivf", json={
            "vectors": {"size": DIM, "distance": "Euclid"},
            "optimizers_config": {"indexing_threshold": 20}})  # KB: ~320 rows
        assert r.status_code == 200, r.text
        for a in range(0, N, 1000):
            r = http.put("/collections/ivf/points?wait=true", json={"points": [
                {"id": i, "vector": x[i].tolist(), "payload": {"even": i % 2 == 0}}
                for i in range(a, min(N, a + 1000))]})
            assert r.status_code == 200, r.text
        _wait_indexed(http, "ivf", N)
        trained = _trainings(http)
        assert trained >= 1, srv.log()
        exact = _search(http, "ivf", q, exact=True)
        assert _recall(_search(http, "ivf", q, exact=False), exact) >= 0.9
        # a filter goes through the IDSelector inside the IVF scan
        flt = {"must": [{"key": "even", "match": {"value": True}}]}
        got = http.post("/collections/ivf/points/search", json={
            "vector": q[0].tolist(), "limit": 10, "filter": flt}).json()["result"]
        assert got and all(p["id"] % 2 == 0 for p in got)

        snap = http.post("/collections/ivf/snapshots").json()["result"]["name"]
        r = http.put("/collections/restored/snapshots/recover", json={
            "location": f"file://{srv.tmp / 'snaps' / 'ivf' / snap}"})
        assert r.status_code == 200, r.text
        info = http.get("/collections/restored").json()["result"]
        assert info["indexed_vectors_count"] == N
        assert _search(http, "restored", q, exact=False) == _search(http, "ivf", q, exact=False)
        assert _trainings(http) == trained  # recovered as it was archived: no retraining

        # hostile IVF arrays: a clear 400, nothing created, the server unharmed
        valid = (srv.tmp / "snaps" / "ivf" / snap).read_bytes()
        assert b"-coarse.npy" in valid and b"ivf-" in valid
        for label, data in _hostile_ivf(valid).items():
            path = srv.tmp / "snaps" / "ivf" / "hostile.snapshot"
            path.write_bytes(data)
            r = http.put("/collections/hostile/snapshots/recover",
                         json={"location": f"file://{path}"})
            assert r.status_code == 400, (label, r.text)
            assert "IVF index" in r.json()["status"]["error"], (label, r.text)
            assert http.get("/collections/hostile").status_code == 404, label
        path.unlink()
        assert _search(http, "restored", q, exact=False) == _search(http, "ivf", q, exact=False)

    srv.restart()
    with ValidatingClient(base_url=srv.url, timeout=60) as http:
        for name in ("ivf", "restored"):
            assert http.get(f"/collections/{name}").json()["result"][
                "indexed_vectors_count"] == N
            assert _recall(_search(http, name, q, exact=False), exact) >= 0.9
        assert _trainings(http) == 0  # reattached from the segment files: none since start
        assert "ignoring IVF index" not in srv.log_path.read_text(errors="replace")
