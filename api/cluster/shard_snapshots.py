"""Qdrant's shard snapshots (`/collections/{c}/shards/{shard_id}/snapshots…`) in cluster mode.

A shard snapshot is one replica's archive (Quiver's own snapshot subsystem, inside the actor),
streamed over Ray's object store to the front end and kept there, beside the collection
snapshots: `<snapshots_path>/<collection>/shards/<shard_id>/<name>.snapshot` (+ `.checksum`),
so that listing, downloading and deleting do not depend on which replica answered. Recovering
one (a location or an upload) streams it to every live replica of the shard and recovers it
there, under the shard's write lock (writes wait; none is lost between two replicas).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from api.cluster.shard import raise_relayed
from api.cluster.transfer import CALL_TIMEOUT_S, CHUNK
from engine.errors import BadRequest, NotFound
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery, check_checksum, check_priority
from snapshots.storage import SUFFIX, Download, LocalStorage, SnapshotInfo, check_snapshot_name

if TYPE_CHECKING:
    from api.cluster.router import ClusterRouter


def shard_id(rt: ClusterRouter, name: str, raw: str) -> int:
    entry = rt._entry(name)
    try:
        sid = int(raw)
    except ValueError:
        raise BadRequest(f"Format error in path: shard_id: invalid digit in {raw!r}") from None
    if not 0 <= sid < entry["shard_number"]:
        raise NotFound(f"Shard {sid} does not exist")
    return sid


def _folder(name: str, sid: int) -> str:
    return os.path.join(name, "shards", str(sid))


def _store(mgr: SnapshotManager) -> LocalStorage:
    return LocalStorage(mgr.root)


def create(rt: ClusterRouter, mgr: SnapshotManager, name: str, sid: int) -> SnapshotInfo:
    """Snapshot one Active replica of the shard and keep the archive on the front end."""
    r = rt._live(name, sid)[0]
    actor = rt.actor_of(r)
    archive = rt.ray.get(actor.snapshot_archive.remote(name), timeout=CALL_TIMEOUT_S)
    tmp = os.path.join(mgr.tmp, f"{uuid.uuid4().hex}.part")
    try:
        with open(tmp, "wb") as f:
            for off in range(0, archive["size"], CHUNK):
                f.write(rt.ray.get(actor.read_chunk.remote(archive["path"], off, CHUNK),
                                   timeout=CALL_TIMEOUT_S))
            f.flush()
            os.fsync(f.fileno())
        store = _store(mgr)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S")
        base = f"{name}-shard-{sid}-{rt.peer_id(r['node_id'])}-{stamp}"
        fname, k = base + SUFFIX, 0
        while store.exists(_folder(name, sid), fname):
            k += 1
            fname = f"{base}-{k}{SUFFIX}"
        return store.publish(tmp, _folder(name, sid), fname, archive["checksum"])
    finally:
        actor.remove_file.remote(archive["path"])
        if os.path.exists(tmp):
            os.unlink(tmp)


def list_snapshots(rt: ClusterRouter, mgr: SnapshotManager, name: str,
                   sid: int) -> list[SnapshotInfo]:
    return _store(mgr).list(_folder(name, sid))


def download(rt: ClusterRouter, mgr: SnapshotManager, name: str, sid: int,
             snapshot: str) -> Download:
    return _store(mgr).download(_folder(name, sid), check_snapshot_name(snapshot))


def delete(rt: ClusterRouter, mgr: SnapshotManager, name: str, sid: int, snapshot: str) -> bool:
    return _store(mgr).delete(_folder(name, sid), check_snapshot_name(snapshot))


def recover_location(rt: ClusterRouter, mgr: SnapshotManager, rec: Recovery, name: str,
                     sid: int, body: dict[str, Any]) -> bool:
    """A shard snapshot at a file:// (inside the snapshots dir) or http(s) location."""
    location = body.get("location")
    if not isinstance(location, str) or not location:
        raise BadRequest("Format error in JSON body: `location` must be a URL string")
    priority = check_priority(body.get("priority"))
    checksum = check_checksum(body.get("checksum"))
    scheme = location.split(":", 1)[0].lower() if ":" in location else ""
    if scheme == "file":
        return recover_file(rt, name, sid, rec.local_path(location), checksum, priority)
    if scheme in ("http", "https"):
        path = os.path.join(mgr.tmp, f"{uuid.uuid4().hex}.download")
        try:
            rec.download(location, path, body.get("api_key"))
            return recover_file(rt, name, sid, path, checksum, priority)
        finally:
            if os.path.exists(path):
                os.unlink(path)
    raise BadRequest(f"URL {location} with scheme {scheme or '(none)'} is not supported")


def recover_file(rt: ClusterRouter, name: str, sid: int, path: str, checksum: str | None,
                 priority: str | None) -> bool:
    """Every live replica of the shard recovers from the archive at `path` (front end's
    disk), one after the other, while the shard's writes wait."""
    with rt.shard_lock(name, sid):
        for t in list(rt.transfers.values()):
            if t.name == name and t.shard_id == sid:
                raise BadRequest(f"Shard {sid} is already involved in transfer "
                                 f"{t.from_peer} -> {t.to_peer}")
        size = os.path.getsize(path)
        for r in rt._live(name, sid):
            actor = rt.actor_of(r)
            dest = rt.ray.get(actor.staging_path.remote(), timeout=CALL_TIMEOUT_S)
            with open(path, "rb") as f:
                for off in range(0, max(size, 1), CHUNK):
                    rt.ray.get(actor.write_chunk.remote(dest, off, f.read(CHUNK)),
                               timeout=CALL_TIMEOUT_S)
            got = rt.ray.get(actor.recover_archive.remote(name, dest, checksum,
                                                          priority or "replica"),
                             timeout=CALL_TIMEOUT_S)
            if "error" in got:
                raise_relayed(got)
    return True
