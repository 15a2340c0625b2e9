"""What a single-node Qdrant answers about its cluster, and the issues report.

Quiver is one node with one shard per collection: `GET /cluster` says distributed mode is
disabled, a collection's cluster info lists its one local shard. Operations that change the
cluster layout are not served (api/qdrant_paths.py answers them with a 400 naming them).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import endpoint
from api.parse.common import collection


def cluster(request: Request, body: Any) -> dict[str, Any]:
    return {"status": "disabled"}


def collection_cluster(request: Request, body: Any) -> dict[str, Any]:
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
