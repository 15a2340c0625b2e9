"""Regression tests for server bugs found by the schemathesis run (tests/test_schemathesis.py)
and by probing around what it found.

Each test is the smallest request that used to fail (a 500, a crash, or a wrong answer), sent
to the real server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from server import QuiverServer


@pytest.fixture
def coll(http: httpx.Client) -> Iterator[str]:
    collection_name = "fuzz_regressions"
    http.delete(f"/collections/{collection_name}")
    assert http.put(f"/collections/{collection_name}",
                    json={"vectors": {"size": 2, "distance": "Dot"}}).status_code == 200
    assert http.put(f"/collections/{collection_name}/points?wait=true", json={"points": [
        {"id": 1, "vector": [1.0, 0.0]}]}).status_code == 200
    yield collection_name
    http.delete(f"/collections/{collection_name}")


def envelope(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"status", "time"} and isinstance(body["time"], int | float)
    assert isinstance(body["status"]["error"], str) and body["status"]["error"]
    return body["status"]["error"]


@pytest.mark.parametrize("raw", ["¹", "²³", "١", "１", "1١"])
def test_point_id_path_with_unicode_digits_is_400(http: httpx.Client, coll: str,
                                                  raw: str) -> None:
    """`GET /points/{id}` read the id with str.isdigit(), true for "¹" (int() fails: 500) and
    for "１" (int() reads 1: the wrong point). Only ASCII digits are an integer id."""
    msg = envelope(http.get(f"/collections/{coll}/points/{raw}"), 400)
    assert "Unable to parse UUID" in msg, msg
    assert http.get(f"/collections/{coll}/points/1").json()["result"]["id"] == 1


def test_background_failure_is_a_warning_not_a_traceback(server: QuiverServer,
                                                         http: httpx.Client,
                                                         coll: str) -> None:
    """A wait=false snapshot operation that fails the way a wait=true one answers with a 4xx
    (here: deleting a snapshot that does not exist) was logged at ERROR with a traceback."""
    name = "nope-0-2020-01-01-00-00-00.snapshot"
    r = http.delete(f"/collections/{coll}/snapshots/{name}?wait=false")
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = server.log_path.read_text(errors="replace")
        if f"Snapshot {name} not found" in log:
            break
        time.sleep(0.05)
    line = next(x for x in log.splitlines() if f"Snapshot {name} not found" in x)
    assert " WARNING " in line and "background snapshot task failed" in line, line
    after = log[log.index(line):].splitlines()[1:3]
    assert not any(x.startswith("Traceback") for x in after), after


BAD_PATCHES = [
    # wrong types that used to be stored as given, then failed every search or GET (500),
    # the background index builds and vacuum, and kept failing after a restart
    {"hnsw_config": {"full_scan_threshold": "abc"}},
    {"hnsw_config": {"ef_construct": "abc"}},
    {"hnsw_config": {"m": "x"}},
    {"optimizers_config": {"deleted_threshold": "x"}},
    {"optimizers_config": {"deleted_threshold": 5}},
    {"params": {"replication_factor": 0}},
    # faiss' HNSW with m = 1 divides by log(1): the index build crashed the process
    {"hnsw_config": {"m": 1}},
    {"hnsw_config": {"m": 1 << 40}},
    # non-objects where objects belong: AttributeError / TypeError, 500
    {"metadata": [1]},
    {"metadata": "x"},
    {"sparse_vectors": 5},
    {"vectors": {"": [1]}},
    {"vectors": {"": "x"}},
    {"hnsw_config": [1]},
]


@pytest.mark.parametrize("body", BAD_PATCHES, ids=lambda b: str(b)[:50])
def test_bad_collection_update_is_400_and_changes_nothing(http: httpx.Client, coll: str,
                                                          body: dict) -> None:
    before = http.get(f"/collections/{coll}").json()["result"]["config"]
    msg = envelope(http.patch(f"/collections/{coll}", json=body), 400)
    assert msg.startswith("Bad request: "), msg
    info = http.get(f"/collections/{coll}")
    assert info.status_code == 200, info.text
    assert info.json()["result"]["config"] == before
    r = http.post(f"/collections/{coll}/points/query", json={"query": [1.0, 0.5], "limit": 1})
    assert r.status_code == 200 and r.json()["result"]["points"][0]["id"] == 1, r.text


BAD_CREATES = [
    {"hnsw_config": {"m": 1}},
    {"hnsw_config": {"full_scan_threshold": "abc"}},
    {"hnsw_config": {"ef_construct": 2}},
    {"optimizers_config": {"vacuum_min_vector_number": "many"}},
    {"wal_config": {"wal_capacity_mb": 0}},
    {"shard_number": 0},
    {"replication_factor": "x"},
    {"on_disk_payload": "yes"},
    {"metadata": [1]},
    {"sparse_vectors": {"s": 5}},
]


@pytest.mark.parametrize("extra", BAD_CREATES, ids=lambda b: str(b)[:50])
def test_bad_collection_config_is_400(http: httpx.Client, extra: dict) -> None:
    name = "fuzz_regressions_create"
    http.delete(f"/collections/{name}")
    body = {"vectors": {"size": 2, "distance": "Dot"}, **extra}
    msg = envelope(http.put(f"/collections/{name}", json=body), 400)
    assert msg.startswith("Bad request: "), msg
    assert http.get(f"/collections/{name}/exists").json()["result"]["exists"] is False


def test_null_in_a_config_diff_keeps_the_value(http: httpx.Client, coll: str) -> None:
    """Qdrant's *ConfigDiff: null means unchanged (it was stored as null, and m: null
    silently turned the HNSW index off)."""
    assert http.patch(f"/collections/{coll}", json={"hnsw_config": {"m": 32}}).status_code == 200
    r = http.patch(f"/collections/{coll}", json={"hnsw_config": {"m": None, "ef_construct": 64}})
    assert r.status_code == 200, r.text
    hnsw = http.get(f"/collections/{coll}").json()["result"]["config"]["hnsw_config"]
    assert hnsw["m"] == 32 and hnsw["ef_construct"] == 64


def test_stored_config_with_bad_values_loads_with_defaults() -> None:
    """A config.json or snapshot archive written before these checks (or a hostile one) still
    loads; bad values fall back to the defaults instead of failing later reads."""
    from engine.config import DEFAULT_HNSW, DEFAULT_OPTIMIZER, from_state

    cfg = from_state({
        "vectors": {"size": 2, "distance": "Dot"},
        "params": {"shard_number": "x", "replication_factor": 2},
        "hnsw_config": {"m": 1, "full_scan_threshold": "abc", "ef_construct": 64},
        "optimizers_config": {"deleted_threshold": "x", "indexing_threshold": None},
        "wal_config": [1],
        "metadata": "x",
        "sparse_vectors": {"s": 5},
    })
    assert cfg.hnsw_config["m"] == DEFAULT_HNSW["m"]
    assert cfg.hnsw_config["full_scan_threshold"] == DEFAULT_HNSW["full_scan_threshold"]
    assert cfg.hnsw_config["ef_construct"] == 64
    assert cfg.optimizer_config == DEFAULT_OPTIMIZER
    assert cfg.params["shard_number"] == 1 and cfg.params["replication_factor"] == 2
    assert cfg.wal_config["wal_capacity_mb"] == 32
    assert cfg.metadata is None and cfg.sparse_vectors == {"s": {}}


@pytest.mark.parametrize("vector", [["1", 0.5], [True, False], ["a", "b"]],
                         ids=["numeric_string", "booleans", "strings"])
def test_vector_of_non_numbers_is_400(http: httpx.Client, coll: str, vector: list) -> None:
    """numpy's float32 conversion read "1" as 1.0 and true as 1.0: such vectors were stored
    (upsert) or searched (query); Qdrant refuses them."""
    before = http.post(f"/collections/{coll}/points/scroll",
                       json={"with_vector": True}).json()["result"]
    for r in (http.put(f"/collections/{coll}/points?wait=true",
                       json={"points": [{"id": 9, "vector": vector}]}),
              http.put(f"/collections/{coll}/points?wait=true",
                       json={"batch": {"ids": [9], "vectors": [vector]}}),
              http.post(f"/collections/{coll}/points/query", json={"query": vector})):
        envelope(r, 400)
    assert http.post(f"/collections/{coll}/points/scroll",
                     json={"with_vector": True}).json()["result"] == before
