"""Which node holds which replica: replicas of a shard on distinct nodes where there are
enough (Ray's SPREAD, made deterministic), shards rotated over nodes; one GPU per replica when
the cluster has GPUs (`cluster.gpu_per_replica`)."""

from __future__ import annotations

from typing import Any


def assign(nodes: list[str], shard_number: int, replication_factor: int) -> list[list[str]]:
    """node ids per shard, per replica: replica r of shard s on node (s + r) mod n, so the
    replicas of one shard differ as long as n ≥ replication_factor."""
    if not nodes:
        raise ValueError("no live Ray node")
    n = len(nodes)
    return [[nodes[(s + r) % n] for r in range(replication_factor)]
            for s in range(shard_number)]


def wants_gpu(ray: Any, gpu: bool | str) -> bool:
    """Whether replicas ask Ray for a GPU (`cluster.gpu_per_replica`: auto = when the
    cluster has any)."""
    return gpu is True or (gpu == "auto" and ray.cluster_resources().get("GPU", 0) >= 1)


def placeable(nodes: list[dict[str, Any]], want_gpu: bool) -> dict[str, str]:
    """The live nodes (runtime.alive_nodes) a new replica may go to, id → its host's address
    (stable across Ray restarts; node ids are not): those with a GPU when replicas ask for
    one. A replica is pinned to its node (actor_options), so a GPU-less node (a CPU-only head,
    say) must not be chosen: the replica could never start."""
    return {n["NodeID"]: n.get("NodeManagerAddress", "") for n in nodes
            if not want_gpu or (n.get("Resources") or {}).get("GPU", 0) >= 1}


def actor_options(ray: Any, node_id: str, name: str, namespace: str,
                  gpu: bool | str) -> dict[str, Any]:
    """Ray options of a replica actor pinned to a node: only there, or it fails (a dead node:
    ActorUnschedulableError). A soft pin let Ray move a replica whose node was busy starting
    workers to another node, at times the node holding the shard's other replica: losing that
    node lost the shard (the removed-node test); and a replica's data is on its node's disk.
    No CPU reservation: replicas are mostly idle between requests, and a small box must fit
    several."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    want_gpu = wants_gpu(ray, gpu)
    return {
        "name": name, "namespace": namespace, "lifetime": "detached", "num_cpus": 0,
        "num_gpus": 1 if want_gpu else 0, "max_concurrency": 8,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
    }
