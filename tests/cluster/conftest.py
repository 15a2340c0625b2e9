"""A Ray cluster of three raylets on this box (ray.cluster_utils.Cluster: each a "node") and a
Quiver front end in cluster mode on it. Small CPU counts: the box has two cores.

The Ray cluster is started once per session (~15 s saved per module); each module still gets
its own front end (`cluster_server`) in its own Ray namespace and storage, and that namespace's
actors (replicas, metadata) are killed when the module ends, so modules do not see each other.
A module sets `CLUSTER_ENV` (a dict) for extra server settings (the repair tests: a repair
delay of one second)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server import QuiverServer

ray = pytest.importorskip("ray")  # part of the dev extra; here only for a bare install


@pytest.fixture(scope="session")
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


def _driver(ray_cluster: Any) -> Any:
    """This process joined to the test cluster (once; namespaces are always named)."""
    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, log_to_driver=False)
    return ray


def _kill_namespace(ray_cluster: Any, namespace: str) -> None:
    """The module's detached actors (they outlive its front end) are stopped."""
    r = _driver(ray_cluster)
    from ray.util import list_named_actors

    for a in list_named_actors(all_namespaces=True):
        if a["namespace"] != namespace:
            continue
        try:
            r.kill(r.get_actor(a["name"], namespace=namespace))
        except Exception:  # noqa: BLE001 - already gone
            pass


@pytest.fixture(scope="module")
def cluster_server(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Iterator[QuiverServer]:
    base: Path = tmp_path_factory.mktemp("cluster")
    namespace = f"q{uuid.uuid4().hex[:8]}"
    srv = QuiverServer(base / "storage", env={
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"),
        "QUIVER__CLUSTER__ENABLED": "true",
        "QUIVER__CLUSTER__RAY_ADDRESS": ray_cluster.address,
        "QUIVER__CLUSTER__NAMESPACE": namespace,
        **getattr(request.module, "CLUSTER_ENV", {}),
    }).start(timeout=180)
    srv.snaps = base / "snaps"  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()
        _kill_namespace(ray_cluster, namespace)


@pytest.fixture(scope="module")
def ray_api(cluster_server: Any, ray_cluster: Any) -> Any:
    """Ray in this process, joined to the test cluster (to ask replicas directly)."""
    return _driver(ray_cluster)
