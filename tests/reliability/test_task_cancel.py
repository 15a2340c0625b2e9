"""Snapshot creation and recovery as tasks, through a real `quiver serve`: progress polled over
HTTP (GET /tasks/{id}) climbs monotonically to bytes_total; a cancelled creation (DELETE
/tasks/{id}) leaves no file behind, a cancelled recovery leaves the collection as it was; and
a kill -9 while a cancelled task winds down leaves nothing behind after the restart.

The storage (~100 MB of vectors; 1 GB in the slow variant) is built in process with numpy
batch upserts, then served. Nothing is throttled."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from server import QuiverServer
from slow import require_slow

from api.parse.writes import apply_body
from engine.catalog import Catalog

DIM = 256
BATCH = 20_000
MARKER = 10**12


def build_storage(storage: Path, rows: int) -> None:
    """Collection `big`: `rows` random vectors (rows * 1 KiB), no HNSW (nothing competes
    with the snapshot work for the two cores)."""
    cat = Catalog(str(storage))
    cat.load()
    coll = cat.create("big", {"vectors": {"size": DIM, "distance": "Dot"},
                              "hnsw_config": {"m": 0}})
    rng = np.random.default_rng(7)
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        apply_body(coll, "upsert", {"batch": {
            "ids": list(range(start, start + n)),
            "vectors": rng.standard_normal((n, DIM), dtype=np.float32)}})
    coll.flush()
    cat.close()


@pytest.fixture(params=[pytest.param(100_000, id="100MB"),
                        pytest.param(1_000_000, id="1GB", marks=pytest.mark.slow)])
def big(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[QuiverServer, int]]:
    rows = request.param
    if rows > 100_000:
        require_slow(request)
    build_storage(tmp_path / "storage", rows)
    srv = QuiverServer(tmp_path / "storage",
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    yield srv, rows
    srv.stop()


def task_of(resp: httpx.Response) -> str:
    location = resp.headers["location"]
    assert location.startswith("/tasks/")
    assert resp.headers["x-quiver-task"] == location.removeprefix("/tasks/")
    return location.removeprefix("/tasks/")


def poll(client: httpx.Client, task_id: str, timeout: float = 600) -> list[dict[str, Any]]:
    """Every state GET /tasks/{id} answered until the task ended."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/tasks/{task_id}")
        assert r.status_code == 200, r.text
        doc = r.json()["result"]
        seen.append(doc)
        if doc["outcome"] != "running":
            return seen
    pytest.fail(f"task {task_id} did not end in {timeout}s")


def assert_monotonic_to_total(states: list[dict[str, Any]]) -> None:
    done = [s["bytes_done"] for s in states]
    assert done == sorted(done), "bytes_done went backwards"
    final = states[-1]
    assert final["outcome"] == "ok", final
    assert final["bytes_total"] and final["bytes_done"] == final["bytes_total"]
    assert all(s["bytes_total"] in (None, final["bytes_total"]) for s in states)
    assert final["progress"] == 1.0
    # seen on the way, not only at the end
    assert any(0 < d < final["bytes_total"] for d in done), done[:50]


def leftovers(srv: QuiverServer) -> list[str]:
    """Files a cancelled task could leave: staging dirs in the storage, temp archives."""
    out = [e for e in os.listdir(srv.storage) if e.startswith((".tmp-", ".swap-"))]
    tmp = srv.tmp / "snaps" / ".tmp"
    if tmp.exists():
        out += [f".tmp/{e}" for e in os.listdir(tmp)]
    return out


def snapshot_files(srv: QuiverServer) -> list[str]:
    root = srv.tmp / "snaps"
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root)
                  for f in fs if ".tmp" not in os.path.relpath(d, root).split(os.sep))


def add_marker(client: httpx.Client) -> None:
    r = client.put("/collections/big/points?wait=true", json={"points": [
        {"id": MARKER, "vector": [0.5] * DIM, "payload": {"marker": "kept"}}]})
    assert r.status_code == 200, r.text


def assert_intact(client: httpx.Client, rows: int) -> None:
    r = client.post("/collections/big/points/count", json={"exact": True})
    assert r.json()["result"]["count"] == rows + 1
    r = client.get(f"/collections/big/points/{MARKER}")
    assert r.status_code == 200 and r.json()["result"]["payload"] == {"marker": "kept"}


def test_progress_climbs_to_total(big: tuple[QuiverServer, int]) -> None:
    srv, rows = big
    with httpx.Client(base_url=srv.url, timeout=600) as client:
        r = client.post("/collections/big/snapshots?wait=false")
        assert r.status_code == 202 and set(r.json()) == {"status", "time"}
        states = poll(client, task_of(r))
        assert_monotonic_to_total(states)
        assert states[-1]["kind"] == "snapshot_create"
        assert states[-1]["collection"] == "big"
        name = client.get("/collections/big/snapshots").json()["result"][0]["name"]
        size = client.get("/collections/big/snapshots").json()["result"][0]["size"]
        assert states[-1]["bytes_total"] == size

        location = f"file://{srv.tmp / 'snaps' / 'big' / name}"
        r = client.put("/collections/copy/snapshots/recover?wait=false",
                       json={"location": location})
        assert r.status_code == 202
        states = poll(client, task_of(r))
        assert_monotonic_to_total(states)
        assert (states[-1]["kind"], states[-1]["source"]) == ("snapshot_recover", "file")
        assert states[-1]["bytes_total"] == size
        count = client.post("/collections/copy/points/count", json={"exact": True})
        assert count.json()["result"]["count"] == rows
    assert leftovers(srv) == []


def test_cancelled_creation_leaves_nothing(big: tuple[QuiverServer, int]) -> None:
    srv, rows = big
    with httpx.Client(base_url=srv.url, timeout=600) as client:
        for path in ("/collections/big/snapshots", "/snapshots"):
            r = client.post(path + "?wait=false")
            task_id = task_of(r)
            r = client.delete(f"/tasks/{task_id}?wait=true&timeout=120")
            assert r.status_code == 200, r.text
            doc = r.json()["result"]
            assert doc["outcome"] == "cancelled" and doc["error"] == "cancelled"
            r = client.delete(f"/tasks/{task_id}")
            assert r.status_code == 409 and "already over" in r.json()["status"]["error"]
        assert client.get("/collections/big/snapshots").json()["result"] == []
        assert client.get("/snapshots").json()["result"] == []
        assert snapshot_files(srv) == [] and leftovers(srv) == []
        metrics = client.get("/metrics").text
        assert 'quiver_tasks_finished_total{kind="snapshot_create",outcome="cancelled"} 1' \
            in metrics


def test_cancelled_recovery_leaves_collection(big: tuple[QuiverServer, int]) -> None:
    srv, rows = big
    with httpx.Client(base_url=srv.url, timeout=600) as client:
        name = client.post("/collections/big/snapshots").json()["result"]["name"]
        add_marker(client)  # the collection now differs from its snapshot
        location = f"file://{srv.tmp / 'snaps' / 'big' / name}"
        r = client.put("/collections/big/snapshots/recover?wait=false",
                       json={"location": location})
        task_id = task_of(r)
        r = client.delete(f"/tasks/{task_id}?wait=true&timeout=120")
        assert r.status_code == 200, r.text
        assert r.json()["result"]["outcome"] == "cancelled"
        assert_intact(client, rows)
        assert leftovers(srv) == []
        assert snapshot_files(srv) == [f"big/{name}", f"big/{name}.checksum"]


def test_kill9_during_cancelled_tasks(big: tuple[QuiverServer, int]) -> None:
    srv, rows = big
    with httpx.Client(base_url=srv.url, timeout=600) as client:
        name = client.post("/collections/big/snapshots").json()["result"]["name"]
        add_marker(client)
        location = f"file://{srv.tmp / 'snaps' / 'big' / name}"
        for method, path, body in (
                ("POST", "/collections/big/snapshots?wait=false", None),
                ("PUT", "/collections/big/snapshots/recover?wait=false", {"location": location})):
            r = client.request(method, path, json=body)
            r = client.delete(f"/tasks/{task_of(r)}")  # cancel asked for, not waited for
            assert r.status_code == 200, r.text
            srv.kill9()  # while it winds down
            srv.start()
            assert_intact(client, rows)
            assert leftovers(srv) == []
            assert snapshot_files(srv) == [f"big/{name}", f"big/{name}.checksum"]
            assert client.get("/tasks").json()["result"] == []  # a new process
