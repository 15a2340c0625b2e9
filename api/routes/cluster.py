"""What Quiver answers about its cluster, and the issues report.

A single node has one shard per collection: `GET /cluster` says distributed mode is disabled,
a collection's cluster info lists its one local shard. In cluster mode (api/cluster) both
answer from the router: Ray's nodes as peers, every shard replica with its state. Operations
that change the cluster layout are not served yet (api/qdrant_paths.py answers them with a 400
naming them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import endpoint
from api.parse.common import collection


def cluster(request: Request, body: Any) -> dict[str, Any]:
    router = request.app.state.cluster
    if router is None:
        return {"status": "disabled"}
    # Quiver keeps no Raft log: the metadata actor is the single writer (api/cluster)
    router.check_replicas()
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"status": "enabled", "peer_id": request.app.state.node_id, "peers": router.peers(),
            "raft_info": {"term": 0, "commit": 0, "pending_operations": 0, "leader": None,
                          "role": "Leader", "is_voter": True},
            "consensus_thread_status": {"consensus_thread_status": "working",
                                        "last_update": now},
            "message_send_failures": {}}


def collection_cluster(request: Request, body: Any) -> dict[str, Any]:
    router = request.app.state.cluster
    if router is not None:
        router.check_replicas()
        return router.cluster_info(request.path_params["collection_name"],
                                   request.app.state.node_id)
    coll = collection(request)
    return {"peer_id": request.app.state.node_id, "shard_count": 1,
            "local_shards": [{"shard_id": 0, "points_count": coll.points_count(),
                              "state": "Active"}],
            "remote_shards": [], "shard_transfers": []}


def issues(request: Request, body: Any) -> dict[str, Any]:
    """Qdrant reports performance issues it detected (e.g. a filtered field without an
    index); Quiver detects none, so the report is empty and clearing it succeeds."""
    return {"issues": []}


def clear_issues(request: Request, body: Any) -> bool:
    return True


routes = [
    Route("/cluster", endpoint(cluster, read_body=False), methods=["GET"]),
    Route("/collections/{collection_name}/cluster", endpoint(collection_cluster, read_body=False),
          methods=["GET"]),
    Route("/issues", endpoint(issues, read_body=False), methods=["GET"]),
    Route("/issues", endpoint(clear_issues, read_body=False), methods=["DELETE"]),
]
