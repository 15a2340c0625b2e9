"""What Quiver answers about its cluster, and the issues report.

A single node has one shard per collection: `GET /cluster` says distributed mode is disabled,
a collection's cluster info lists its one local shard. In cluster mode (api/cluster) both
answer from the router: Ray's nodes as peers, every shard replica with its state and the
shard transfers under way. In cluster mode only (a single node answers the 400 of
api/qdrant_paths.py, as before): `POST /collections/{c}/cluster` (api/cluster/layout.py) and
the shard snapshots `/collections/{c}/shards/{shard_id}/snapshots…`
(api/cluster/shard_snapshots.py).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import PayloadTooLarge, from_exception, ok
from api.http import body_dict, endpoint
from api.multipart import receive_file
from api.parse.common import collection
from api.qdrant_paths import not_served
from api.routes.snapshots import _check_upload_size, _download, _maybe_async, _refused
from engine.errors import BadRequest, EngineError, StorageFull
from snapshots.recovery import check_checksum, check_priority
from snapshots.scan import ChecksumMismatch

C = "/collections/{collection_name}"
SS = C + "/shards/{shard_id}/snapshots"


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


def _router(request: Request, method: str, template: str) -> Any:
    """The cluster router; a single node answers the operation's 400, as before."""
    router = request.app.state.cluster
    if router is None:
        raise BadRequest(not_served(method, template))
    return router


def update_cluster(request: Request, body: Any) -> bool:
    from api.cluster import layout  # noqa: PLC0415 - cluster mode only

    router = _router(request, "POST", C + "/cluster")
    return layout.update(router, request.path_params["collection_name"], body)


def _shard(request: Request, method: str, template: str) -> tuple[Any, Any, str, int]:
    """(router, shard_snapshots module, collection, shard id), checked."""
    router = _router(request, method, template)
    from api.cluster import shard_snapshots  # noqa: PLC0415 - cluster mode only

    name = request.path_params["collection_name"]
    return (router, shard_snapshots, name,
            shard_snapshots.shard_id(router, name, request.path_params["shard_id"]))


def create_shard_snapshot(request: Request, body: Any) -> dict[str, Any]:
    rt, ss, name, sid = _shard(request, "POST", SS)
    return ss.create(rt, request.app.state.snapshots, name, sid).to_json()


def list_shard_snapshots(request: Request, body: Any) -> list[dict[str, Any]]:
    rt, ss, name, sid = _shard(request, "GET", SS)
    return [s.to_json() for s in ss.list_snapshots(rt, request.app.state.snapshots, name, sid)]


def delete_shard_snapshot(request: Request, body: Any) -> bool:
    rt, ss, name, sid = _shard(request, "DELETE", SS + "/{snapshot_name}")
    return ss.delete(rt, request.app.state.snapshots, name, sid,
                     request.path_params["snapshot_name"])


def recover_shard_snapshot(request: Request, body: Any) -> bool:
    rt, ss, name, sid = _shard(request, "PUT", SS + "/recover")
    return ss.recover_location(rt, request.app.state.snapshots, request.app.state.recovery,
                               name, sid, body_dict(body))


def _locate_shard_snapshot(request: Request) -> Any:
    rt, ss, name, sid = _shard(request, "GET", SS + "/{snapshot_name}")
    return ss.download(rt, request.app.state.snapshots, name, sid,
                       request.path_params["snapshot_name"])


async def upload_shard_snapshot(request: Request) -> Response:
    """Multipart field `snapshot`, streamed to the front end's snapshots temp dir, then
    recovered on every live replica of the shard (the answer waits for it)."""
    started = time.perf_counter()
    tmp = None
    try:
        rt, ss, name, sid = await run_in_threadpool(_shard, request, "POST", SS + "/upload")
        priority = check_priority(request.query_params.get("priority"))
        checksum = check_checksum(request.query_params.get("checksum"))
        mgr = request.app.state.snapshots
        try:
            limit = _check_upload_size(request, mgr.tmp)
            tmp = os.path.join(mgr.tmp, f"{uuid.uuid4().hex}.upload")
            got = await receive_file(request, "snapshot", tmp, max_bytes=limit)
        except (PayloadTooLarge, StorageFull) as exc:
            return _refused(exc, started)
        if checksum is not None and got.sha256 != checksum:
            raise ChecksumMismatch(f"Checksum mismatch: expected {checksum}, actual {got.sha256}")
        result = await run_in_threadpool(ss.recover_file, rt, name, sid, tmp, None, priority)
        return ok(result, started)
    except EngineError as exc:
        return from_exception(exc, started)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


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
    Route(C + "/cluster", endpoint(update_cluster), methods=["POST"]),
    Route(SS, endpoint(_maybe_async(create_shard_snapshot), read_body=False), methods=["POST"]),
    Route(SS, endpoint(list_shard_snapshots, read_body=False), methods=["GET"]),
    Route(SS + "/recover", endpoint(recover_shard_snapshot), methods=["PUT"]),
    Route(SS + "/upload", upload_shard_snapshot, methods=["POST"]),
    Route(SS + "/{snapshot_name}", _download(_locate_shard_snapshot, clustered=True), methods=["GET"]),
    Route(SS + "/{snapshot_name}", endpoint(delete_shard_snapshot, read_body=False),
          methods=["DELETE"]),
    Route("/issues", endpoint(issues, read_body=False), methods=["GET"]),
    Route("/issues", endpoint(clear_issues, read_body=False), methods=["DELETE"]),
]
