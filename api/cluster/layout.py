"""Qdrant's `POST /collections/{c}/cluster` in cluster mode: move_shard, replicate_shard,
drop_replica, abort_transfer. Checked here (bad input: 400, unknown shard: 404, nothing
changed); a move or a replication then runs as a shard transfer (api/cluster/transfer.py) and
the answer is `true` at once, as Qdrant answers once the operation is accepted: the transfer
shows in `GET /collections/{c}/cluster` until it is done."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.cluster.split import unsupported
from engine.errors import BadRequest, NotFound

if TYPE_CHECKING:
    from api.cluster.router import ClusterRouter

KNOWN = ("move_shard", "replicate_shard", "abort_transfer", "drop_replica")
UNBUILT = ("create_sharding_key", "drop_sharding_key", "restart_transfer", "start_resharding",
           "abort_resharding", "replicate_points")


def _uint(body: dict[str, Any], key: str, op: str) -> int:
    v = body.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise BadRequest(f"Format error in JSON body: {op}.{key}: expected an unsigned "
                         f"integer, got {v!r}")
    return v


def _shard(rt: ClusterRouter, name: str, body: dict[str, Any], op: str) -> int:
    sid = _uint(body, "shard_id", op)
    if sid >= rt._entry(name)["shard_number"]:
        raise NotFound(f"Shard {sid} does not exist")
    return sid


def _replica_on(rt: ClusterRouter, name: str, sid: int, peer: int) -> dict[str, Any] | None:
    for r in rt._entry(name)["shards"][str(sid)]:
        if rt.peer_id(r["node_id"]) == peer:
            return r
    return None


def _known_peer(rt: ClusterRouter, peer: int) -> str:
    node = rt.node_of_peer(peer)
    if node is None:
        raise BadRequest(f"Peer {peer} does not exist")
    return node


def _busy(rt: ClusterRouter, name: str, sid: int) -> None:
    for t in list(rt.transfers.values()):
        if t.name == name and t.shard_id == sid:
            raise BadRequest(f"Shard {sid} is already involved in transfer "
                             f"{t.from_peer} -> {t.to_peer}")


def _transfer(rt: ClusterRouter, name: str, body: dict[str, Any], op: str) -> bool:
    sid = _shard(rt, name, body, op)
    src_peer, dst_peer = _uint(body, "from_peer_id", op), _uint(body, "to_peer_id", op)
    method = body.get("method")
    if method not in (None, "snapshot", "stream_records", "wal_delta"):
        raise BadRequest(f"Format error in JSON body: {op}.method: unknown variant {method!r}")
    if src_peer == dst_peer:
        raise BadRequest(f"{op}: from_peer_id and to_peer_id must be different")
    _known_peer(rt, src_peer)
    node = _known_peer(rt, dst_peer)
    source = _replica_on(rt, name, sid, src_peer)
    if source is None or source["state"] != "Active":
        raise BadRequest(f"Shard {sid} is not active on peer {src_peer}")
    if _replica_on(rt, name, sid, dst_peer) is not None:
        raise BadRequest(f"Shard {sid} is already present on peer {dst_peer}")
    _busy(rt, name, sid)
    # every method is served by a snapshot transfer: it copies the same points
    rt.begin_transfer(name, sid, source, node, sync=op == "replicate_shard")
    return True


def _abort(rt: ClusterRouter, name: str, body: dict[str, Any]) -> bool:
    op = "abort_transfer"
    sid = _shard(rt, name, body, op)
    src_peer, dst_peer = _uint(body, "from_peer_id", op), _uint(body, "to_peer_id", op)
    t = rt.transfers.get((name, sid, src_peer, dst_peer))
    if t is None:
        raise BadRequest(f"There is no transfer for shard {sid} from {src_peer} to {dst_peer}")
    t.abort("aborted by request")  # its thread removes the new replica
    return True


def _drop(rt: ClusterRouter, name: str, body: dict[str, Any]) -> bool:
    op = "drop_replica"
    sid = _shard(rt, name, body, op)
    peer = _uint(body, "peer_id", op)
    r = _replica_on(rt, name, sid, peer)
    if r is None:
        raise BadRequest(f"Shard {sid} has no replica on peer {peer}")
    for t in list(rt.transfers.values()):
        if t.name == name and t.shard_id == sid and r["replica_id"] in (
                t.source["replica_id"], t.target["replica_id"]):
            raise BadRequest(f"Shard {sid} is already involved in transfer "
                             f"{t.from_peer} -> {t.to_peer}")
    others = [x for x in rt._entry(name)["shards"][str(sid)]
              if x["state"] == "Active" and x is not r]
    if not others:
        raise BadRequest(f"Shard {sid} must have at least one active replica after removing "
                         f"peer {peer}")
    rt.drop_replica(name, sid, r)
    return True


def update(rt: ClusterRouter, name: str, body: Any) -> bool:
    rt._entry(name)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Format error in JSON body: expected one of "
                         + ", ".join(f"`{k}`" for k in KNOWN))
    (op, args), = body.items()
    if op in UNBUILT:
        raise unsupported(f"cluster operation `{op}`")
    if op not in KNOWN:
        raise BadRequest(f"Format error in JSON body: unknown cluster operation `{op}`")
    if not isinstance(args, dict):
        raise BadRequest(f"Format error in JSON body: `{op}` must be an object")
    if op in ("move_shard", "replicate_shard"):
        return _transfer(rt, name, args, op)
    if op == "abort_transfer":
        return _abort(rt, name, args)
    return _drop(rt, name, args)
