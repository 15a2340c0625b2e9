"""Cluster mode on a Ray instance of its own (`cluster.ray_address: local`, one box): each
start of the server starts a new Ray, whose node ids are all new. The replicas are started
again on a node of their host (their data is on its disk), the metadata records the new node,
and the collection answers as before. (It used to be all Dead after a restart: the watcher
saw recorded node ids that no live node has.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import models
from server import QuiverServer

ray = pytest.importorskip("ray")

NAME = "kept"


def _replicas(storage: Path) -> list[dict]:
    state = json.loads((storage / "cluster" / "metadata.json").read_text())
    return [r for reps in state["collections"][NAME]["shards"].values() for r in reps]


def test_restart_on_a_fresh_local_ray(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    env = {"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps"),
           "QUIVER__CLUSTER__ENABLED": "true", "QUIVER__CLUSTER__RAY_ADDRESS": "local",
           "QUIVER__CLUSTER__NUM_CPUS": "2"}
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((60, 8)).tolist()
    query = rng.standard_normal(8).tolist()
    srv = QuiverServer(storage, env=env).start(timeout=180)
    try:
        c = validating_qdrant_client(srv.url, timeout=120)
        c.create_collection(NAME, vectors_config=models.VectorParams(
            size=8, distance=models.Distance.DOT), shard_number=2)
        c.upsert(NAME, [models.PointStruct(id=i, vector=v, payload={"i": i})
                        for i, v in enumerate(vectors)], wait=True)
        before = [(p.id, p.score) for p in c.query_points(NAME, query, limit=10).points]
        c.close()
    finally:
        srv.stop()
    old = _replicas(storage)
    assert all(r["host"] for r in old)
    srv = QuiverServer(storage, env=env).start(timeout=180)
    try:
        c = validating_qdrant_client(srv.url, timeout=120)
        deadline = time.monotonic() + 60
        while True:  # a few watcher rounds (one a second): still every replica Active
            ci = httpx.get(f"{srv.url}/collections/{NAME}/cluster").json()["result"]
            assert {r["state"] for r in ci["remote_shards"]} == {"Active"}, ci
            if time.monotonic() > deadline - 55:
                break
            time.sleep(0.5)
        assert c.count(NAME, exact=True).count == 60
        assert [(p.id, p.score) for p in c.query_points(NAME, query, limit=10).points] \
            == before
        assert c.retrieve(NAME, [7])[0].payload == {"i": 7}
        c.close()
        new = _replicas(storage)
        # new node ids (a new Ray), same host, same directories
        assert {r["node_id"] for r in new}.isdisjoint({r["node_id"] for r in old})
        assert [(r["replica_id"], r["host"], r["dir"]) for r in new] \
            == [(r["replica_id"], r["host"], r["dir"]) for r in old]
    finally:
        srv.stop()
