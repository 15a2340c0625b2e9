"""Shard transfer: a new replica filled from a live one by a snapshot, then caught up.

1. The target replica is registered in state Partial and the transfer from then on sees every
   write of the shard (the router appends each acknowledged write to `Transfer.log`, under the
   shard's write lock, tagged with the WAL sequence number the *source* replica gave it).
2. The source freezes its collection at one sequence number `seq` and writes the archive
   (Quiver's own snapshot subsystem, inside the actor); the bytes travel in CHUNK pieces through
   Ray's object store (source.read_chunk's result is passed by reference to target.write_chunk,
   so the front end never holds them) and the target recovers from them with priority `replica`.
3. Catch-up: the target replays, in order, the logged writes the snapshot does not hold (source
   sequence number > seq; writes without one, such as a config change, are idempotent and are
   replayed always). Most of the log is replayed while writes go on; the rest under the shard's
   write lock, which is then released with the target Active: from that moment it gets writes
   like any replica.
Why this loses no acknowledged write: a write acknowledged before step 1 was applied by the
source before the snapshot was frozen, so it is in the archive; one acknowledged after step 1 is
in the log (it was appended before its acknowledgement left the lock), and it is replayed unless
its sequence number shows the archive already holds it. Forwarding writes straight to the
Partial replica instead would need it to exist before the archive replaces it, and would mix
writes older and newer than the snapshot.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from api.cluster.shard import raise_relayed
from engine.errors import ServiceError

if TYPE_CHECKING:
    from api.cluster.router import ClusterRouter

log = logging.getLogger("quiver.cluster")

CHUNK = 8 << 20  # bytes per object-store hop: bounded memory on both ends
CALL_TIMEOUT_S = 300.0


class TransferAborted(Exception):
    pass


@dataclasses.dataclass
class Transfer:
    name: str
    shard_id: int
    source: dict[str, Any]  # the live replica the snapshot comes from
    target: dict[str, Any]  # the new replica (Partial until it caught up)
    from_peer: int
    to_peer: int
    sync: bool  # True: a new copy (replicate, repair); False: a move (the source is dropped)
    replaces: int | None = None  # repair: the Dead replica dropped once the target is Active
    # (source seq or None, method, template, path params, query, body), in write order
    log: list[tuple[int | None, str, str, dict[str, str], dict[str, str], Any]] = \
        dataclasses.field(default_factory=list)
    aborted: str | None = None  # why, once aborted
    phase: str = "starting"
    started: float = dataclasses.field(default_factory=time.time)

    def key(self) -> tuple[str, int, int, int]:
        return (self.name, self.shard_id, self.from_peer, self.to_peer)

    def abort(self, why: str) -> None:
        if self.aborted is None:
            self.aborted = why

    def check(self) -> None:
        if self.aborted is not None:
            raise TransferAborted(self.aborted)

    def info(self) -> dict[str, Any]:
        """Qdrant's ShardTransferInfo."""
        return {"shard_id": self.shard_id, "from": self.from_peer, "to": self.to_peer,
                "sync": self.sync, "method": "snapshot",
                "comment": f"{self.phase}: {len(self.log)} writes logged since the start"}


def write_seq(result: Any) -> int | None:
    """The WAL sequence number a replica gave a write (a point write's operation_id)."""
    if isinstance(result, dict):
        seq = result.get("operation_id")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
            return seq
    return None


def stream_archive(ray: Any, source: Any, target: Any, archive: dict[str, Any],
                   check: Any = None) -> str:
    """Copy the source's archive into a file of the target's, CHUNK bytes at a time through
    the object store; returns the target's path."""
    dest = ray.get(target.staging_path.remote(), timeout=CALL_TIMEOUT_S)
    for off in range(0, max(archive["size"], 1), CHUNK):
        if check is not None:
            check()
        piece = source.read_chunk.remote(archive["path"], off, CHUNK)
        ray.get(target.write_chunk.remote(dest, off, piece), timeout=CALL_TIMEOUT_S)
    return dest


def copy_shard(rt: ClusterRouter, t: Transfer) -> int:
    """Steps 2: snapshot on the source, stream, recover on the target. The snapshot's seq."""
    ray = rt.ray
    src, dst = rt.actor_of(t.source), rt.actor_of(t.target)
    t.phase = "snapshot"
    archive = ray.get(src.snapshot_archive.remote(t.name), timeout=CALL_TIMEOUT_S)
    try:
        t.check()
        t.phase = "streaming"
        dest = stream_archive(ray, src, dst, archive, t.check)
    finally:
        src.remove_file.remote(archive["path"])
    t.check()
    t.phase = "recovering"
    got = ray.get(dst.recover_archive.remote(t.name, dest, archive["checksum"]),
                  timeout=CALL_TIMEOUT_S)
    if "error" in got:
        raise_relayed(got)
    return int(archive["seq"])


def replay(rt: ClusterRouter, t: Transfer, seq: int, start: int) -> int:
    """Apply the logged writes from index `start` that the snapshot (`seq`) lacks, in order;
    returns the index reached."""
    actor = rt.actor_of(t.target)
    i = start
    while i < len(t.log):
        t.check()
        wseq, method, template, params, query, body = t.log[i]
        if wseq is None or wseq > seq:
            got = rt.ray.get(actor.call.remote(method, template, params, query, body),
                             timeout=CALL_TIMEOUT_S)
            if "error" in got:
                raise ServiceError(f"replaying a write on the new replica failed: "
                                   f"{got['message']}")
        i += 1
    return i


def run(rt: ClusterRouter, t: Transfer) -> None:
    """The whole transfer (its own thread); on any failure the target is removed again."""
    try:
        seq = copy_shard(rt, t)
        t.phase = "catching up"
        done = replay(rt, t, seq, 0)
        done = replay(rt, t, seq, done)  # what came while the first pass ran
        with rt.shard_lock(t.name, t.shard_id):
            replay(rt, t, seq, done)
            t.check()
            rt.transfer_done(t)
        log.info("transfer of %s/%s to peer %s done (%d writes replayed after seq %d)",
                 t.name, t.shard_id, t.to_peer, len(t.log), seq)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the target must go
        why = t.aborted or f"{type(exc).__name__}: {exc}"
        log.warning("transfer of %s/%s to peer %s failed: %s", t.name, t.shard_id, t.to_peer,
                    why)
        t.abort(why)
        rt.transfer_failed(t)


def start(rt: ClusterRouter, t: Transfer) -> threading.Thread:
    th = threading.Thread(target=run, args=(rt, t), daemon=True,
                          name=f"quiver-transfer-{t.name}-{t.shard_id}")
    th.start()
    return th
