"""HNSW indexes through the real server: background build, recall against exact search,
filters, params, persistence across restart and inside snapshots (never rebuilt), and
hostile graphs rejected before faiss sees them."""

from __future__ import annotations

import io
import time
from typing import Any

import hostile_archives as ha
import httpx
import numpy as np
import pytest

from api.parse.writes import apply_body
from engine import ann

pytestmark = pytest.mark.skipif(not ann.available(), reason="faiss-cpu not installed")

DIM = 32
N = 6000
CONFIG = {"vectors": {"size": DIM, "distance": "Cosine"},
          "optimizers_config": {"indexing_threshold": 100},  # KB: ~800 rows of 32 floats
          "hnsw_config": {"m": 16, "ef_construct": 64}}


def clustered(n: int, seed: int) -> np.ndarray:
    """Points around 40 fixed centres (queries drawn like the data, as in real workloads)."""
    centres = np.random.default_rng(0).standard_normal((40, DIM))
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(0, 40, n)] + 0.4 * rng.standard_normal((n, DIM))).astype(
        np.float32)


def create_indexed(http: httpx.Client, name: str) -> np.ndarray:
    assert http.put(f"/collections/{name}", json=CONFIG).status_code == 200
    x = clustered(N, 1)
    for s in range(0, N, 1000):
        pts = [{"id": i, "vector": x[i].tolist(), "payload": {"g": i % 20}}
               for i in range(s, min(s + 1000, N))]
        r = http.put(f"/collections/{name}/points?wait=true", json={"points": pts})
        assert r.status_code == 200, r.text
    wait_indexed(http, name, N)
    return x


def wait_indexed(http: httpx.Client, name: str, rows: int, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info = http.get(f"/collections/{name}").json()["result"]
        if info["status"] == "green" and info["indexed_vectors_count"] >= rows:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


def top_ids(http: httpx.Client, name: str, q: np.ndarray, **extra: Any) -> list[int]:
    r = http.post(f"/collections/{name}/points/query",
                  json={"query": q.tolist(), "limit": 10, **extra})
    assert r.status_code == 200, r.text
    return [p["id"] for p in r.json()["result"]["points"]]


def recall(http: httpx.Client, name: str, queries: np.ndarray, **extra: Any) -> float:
    hits = []
    plain = {k: v for k, v in extra.items() if k != "params"}
    for q in queries:
        exact = top_ids(http, name, q, params={"exact": True}, **plain)
        got = top_ids(http, name, q, **extra)
        hits.append(len(set(got) & set(exact)) / max(len(exact), 1))
    return float(np.mean(hits))


def builds(http: httpx.Client) -> int:
    return http.get("/telemetry").json()["result"]["quiver"]["index_builds"]


def test_index_is_built_in_background_and_searches_well(fresh_server, tmp_path) -> None:
    with httpx.Client(base_url=fresh_server.url, timeout=60) as http:
        create_indexed(http, "ann")
        info = http.get("/collections/ann").json()["result"]
        assert info["indexed_vectors_count"] == N and info["status"] == "green"
        queries = clustered(30, 7)
        assert recall(http, "ann", queries) >= 0.9
        assert recall(http, "ann", queries, params={"hnsw_ef": 256}) >= 0.98
        # filters: 50% through the graph with a selector, 5% answered exactly
        half = {"must": [{"key": "g", "range": {"lt": 10}}]}
        one = {"must": [{"key": "g", "match": {"value": 3}}]}
        assert recall(http, "ann", queries, filter=half) >= 0.95
        assert recall(http, "ann", queries, filter=one) == 1.0
        for q in queries[:5]:
            for pid in top_ids(http, "ann", q, filter=half):
                assert pid % 20 < 10
        # deleted points never come back from the graph
        victims = top_ids(http, "ann", queries[0])[:3]
        http.post("/collections/ann/points/delete?wait=true", json={"points": victims})
        assert not set(victims) & set(top_ids(http, "ann", queries[0]))


def test_writes_during_indexing_are_searchable_immediately(fresh_server) -> None:
    with httpx.Client(base_url=fresh_server.url, timeout=60) as http:
        create_indexed(http, "tail")
        fresh = clustered(50, 99)
        pts = [{"id": 100_000 + i, "vector": v.tolist()} for i, v in enumerate(fresh)]
        assert http.put("/collections/tail/points?wait=true",
                        json={"points": pts}).status_code == 200
        for i, v in enumerate(fresh[:10]):  # the unindexed tail is scanned exactly
            assert top_ids(http, "tail", v)[0] == 100_000 + i


@pytest.mark.parametrize("params", [{"hnsw_ef": -1}, {"hnsw_ef": "x"}, {"exact": "yes"}, 5])
def test_bad_search_params_are_400(server, params: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.put("/collections/params_bad", json=CONFIG)
        r = http.post("/collections/params_bad/points/query",
                      json={"query": [0.1] * DIM, "params": params})
        assert r.status_code == 400, r.text
        assert r.json()["status"]["error"]


def test_index_survives_restart_without_rebuild(fresh_server) -> None:
    with httpx.Client(base_url=fresh_server.url, timeout=60) as http:
        create_indexed(http, "keep")
        q = clustered(5, 3)
        before = [top_ids(http, "keep", v) for v in q]
    fresh_server.restart(kill=True)
    with httpx.Client(base_url=fresh_server.url, timeout=60) as http:
        info = http.get("/collections/keep").json()["result"]
        assert info["indexed_vectors_count"] == N and info["status"] == "green"
        assert [top_ids(http, "keep", v) for v in q] == before
        time.sleep(1.0)
        assert builds(http) == 0  # loaded from the persisted graph, not rebuilt


def test_snapshot_carries_the_index_and_recovery_never_rebuilds(fresh_server) -> None:
    with httpx.Client(base_url=fresh_server.url, timeout=120) as http:
        create_indexed(http, "src")
        name = http.post("/collections/src/snapshots").json()["result"]["name"]
        archive = http.get(f"/collections/src/snapshots/{name}").content
        members = [e.info.name for e in ha.parse(archive)]
        assert any("/hnsw-" in m and m.endswith("-neighbors.npy") for m in members), members
        q = clustered(5, 4)
        want = [top_ids(http, "src", v) for v in q]
        built = builds(http)
        r = http.post("/collections/dst/snapshots/upload?wait=true",
                      files={"snapshot": ("s.snapshot", io.BytesIO(archive))})
        assert r.status_code == 200, r.text
        info = http.get("/collections/dst").json()["result"]
        assert info["indexed_vectors_count"] == N and info["status"] == "green"
        assert [top_ids(http, "dst", v) for v in q] == want
        time.sleep(1.0)
        assert builds(http) == built  # the archive's graph was used as is


def _corrupt_neighbors(data: bytes) -> bytes:
    arr = np.load(io.BytesIO(data))
    arr = arr.copy()
    arr[len(arr) // 2] = 10**9  # a neighbour id far outside the segment
    return ha.npy(arr)


def _truncate_offsets(data: bytes) -> bytes:
    return ha.npy(np.load(io.BytesIO(data))[:-1])


@pytest.mark.parametrize("suffix,content", [("-neighbors.npy", _corrupt_neighbors),
                                            ("-offsets.npy", _truncate_offsets)])
def test_hostile_graph_is_rejected_and_nothing_changes(fresh_server, suffix, content) -> None:
    with httpx.Client(base_url=fresh_server.url, timeout=120) as http:
        create_indexed(http, "g")
        name = http.post("/collections/g/snapshots").json()["result"]["name"]
        valid = http.get(f"/collections/g/snapshots/{name}").content
        hostile = ha.member_content(suffix, content)(valid, None)
        q = clustered(3, 5)
        before = [top_ids(http, "g", v) for v in q]
        r = http.post("/collections/g/snapshots/upload?wait=true",
                      files={"snapshot": ("s.snapshot", io.BytesIO(hostile))})
        assert r.status_code == 400, r.text
        assert "HNSW graph" in r.json()["status"]["error"]
        assert [top_ids(http, "g", v) for v in q] == before


def test_graph_checks_reject_inconsistent_arrays() -> None:
    x = clustered(500, 2)
    good = ann.HnswIndex.build(x, "ip", 16, 64).graph()
    ann.HnswIndex.from_graph(x, good, "ip", 16, 64)  # the control
    bad_cases = {
        "entry outside": {**good, "entry": np.array([10**6, good["entry"][1]])},
        "level too high": {**good, "levels": good["levels"] + 40},
        "more rows than vectors": good,
    }
    for label, graph in bad_cases.items():
        vecs = x[:100] if label == "more rows than vectors" else x
        with pytest.raises(ann.GraphError):
            ann.HnswIndex.from_graph(vecs, graph, "ip", 16, 64)
    with pytest.raises(ann.GraphError):  # built with m=16, read with m=32: offsets disagree
        ann.HnswIndex.from_graph(x, good, "ip", 32, 64)
    # a level-1 link to a node that only has level 0: a walk would read that node's level-1
    # list, which is not there (past the array's end for the last node)
    low = int(np.flatnonzero(good["levels"] == 1)[-1])
    high = int(np.flatnonzero(good["levels"] >= 2)[0])
    neighbors = good["neighbors"].copy()
    neighbors[int(good["offsets"][high]) + 32] = low  # cum[1] = 2m = 32: its first level-1 link
    with pytest.raises(ann.GraphError, match="links level 1"):
        ann.HnswIndex.from_graph(x, {**good, "neighbors": neighbors}, "ip", 16, 64)


def test_sealed_segment_serves_vectors_from_its_index(tmp_path, monkeypatch) -> None:
    """Memory: a sealed, fully indexed float32 segment holds its vectors once (the index's
    storage), with identical values and answers."""
    from engine.collection import Collection
    from gpu.device import HOST

    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 64 * 1024)
    # host memory sharing is what is tested: keep the segments off the device even on a GPU
    monkeypatch.setattr("engine.collection.default_device", lambda: HOST)
    coll = Collection.create("m", str(tmp_path / "m"), CONFIG)
    x = clustered(3000, 8)
    for s in range(0, 3000, 500):
        apply_body(coll, "upsert",
                   {"batch": {"ids": list(range(s, s + 500)), "vectors": x[s : s + 500]}})
    before = {seg.seg_id: np.array(seg.vectors[""][: seg.n]) for seg in coll.segments}
    while coll.build_pending_index():
        pass
    shared = [seg for seg in coll.segments if seg.sealed and "" in seg.ann]
    assert shared
    for seg in shared:
        arr = seg.vectors[""]
        assert not arr.flags.writeable and isinstance(arr.base, ann._Borrowed)
        np.testing.assert_array_equal(arr[: seg.n], before[seg.seg_id])
    coll.close()
    again = Collection.load("m", str(tmp_path / "m"))  # graphs re-attached, still shared
    assert any(isinstance(s.vectors[""].base, ann._Borrowed) for s in again.segments)
    again.close()
