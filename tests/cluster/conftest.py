"""A Ray cluster of three raylets on this box (ray.cluster_utils.Cluster: each a "node") and a
Quiver front end in cluster mode on it. Small CPU counts: the box has two cores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server import QuiverServer

ray = pytest.importorskip("ray")  # part of the dev extra; here only for a bare install


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def cluster_server(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[QuiverServer]:
    base: Path = tmp_path_factory.mktemp("cluster")
    srv = QuiverServer(base / "storage", env={
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"),
        "QUIVER__CLUSTER__ENABLED": "true",
        "QUIVER__CLUSTER__RAY_ADDRESS": ray_cluster.address,
        "QUIVER__CLUSTER__NAMESPACE": f"q{uuid.uuid4().hex[:8]}",
    }).start(timeout=180)
    yield srv
    srv.stop()
