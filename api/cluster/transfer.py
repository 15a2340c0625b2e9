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

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from api.cluster.shard import raise_relayed
from engine.errors import ServiceError

if TYPE_CHECKING:
    from api.cluster.router import ClusterRouter

log = logging.getLogger("quiver.cluster")

CHUNK = 8 << 20  # bytes per object-store hop: bounded memory on both ends
CALL_TIMEOUT_S = 300.0
LOG_MEMORY_BYTES = 64 << 20  # a transfer's logged writes held in memory; the rest on disk
SPILL_DIR = "transfers"  # under the front end's storage dir/cluster (api/cluster/router.py)


class TransferAborted(Exception):
    pass


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class TransferLog:
    """The writes a transfer replays, in order: (source seq or None, method, template, path
    params, query, body). Each is stored serialised (JSON; a write's body is JSON to begin
    with), so later changes to the request's objects cannot reach it. The first
    `memory_bytes` stay in memory; past that, entries go to an append-only file in
    `spill_dir` (the front end's disk), so a long transfer under heavy writes cannot fill the
    front end's memory. `close()` removes the file; the router removes any left by a crash at
    start-up. Appends (request threads, under the shard's write lock) and reads (the transfer's
    thread) may run at once."""

    def __init__(self, spill_dir: str | None, memory_bytes: int = LOG_MEMORY_BYTES) -> None:
        self.spill_dir = spill_dir
        self.memory_bytes = memory_bytes
        self._mem: list[bytes] = []
        self._mem_size = 0
        self._spans: list[tuple[int, int]] = []  # (offset, length) of the spilled entries
        self._file: Any = None
        self.path: str | None = None
        self._end = 0
        self._unflushed = False
        self._closed = False
        self._lock = threading.Lock()

    def append(self, entry: tuple[int | None, str, str, dict[str, str], dict[str, str],
                                  Any]) -> None:
        data = orjson.dumps(entry, default=_jsonable)
        with self._lock:
            if self._closed:  # a write that picked the transfer just before it ended
                return
            if not self._spans and (self.spill_dir is None
                                    or self._mem_size + len(data) <= self.memory_bytes):
                self._mem.append(data)
                self._mem_size += len(data)
                return
            if self._file is None:
                assert self.spill_dir is not None
                os.makedirs(self.spill_dir, exist_ok=True)
                self.path = os.path.join(self.spill_dir, f"{uuid.uuid4().hex}.log")
                self._file = open(self.path, "w+b")  # noqa: SIM115 - closed by close()
                log.info("transfer log past %d bytes: spilling to %s", self.memory_bytes,
                         self.path)
            self._file.write(data)
            self._spans.append((self._end, len(data)))
            self._end += len(data)
            self._unflushed = True

    def __len__(self) -> int:
        return len(self._mem) + len(self._spans)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        with self._lock:
            if i < len(self._mem):
                data = self._mem[i]
            else:
                off, size = self._spans[i - len(self._mem)]
                if self._unflushed:
                    self._file.flush()
                    self._unflushed = False
                data = os.pread(self._file.fileno(), size, off)
        return tuple(orjson.loads(data))

    def spilled(self) -> int:
        """How many entries are on disk."""
        return len(self._spans)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
            if self.path is not None:
                with contextlib.suppress(OSError):
                    os.remove(self.path)
            self._mem, self._spans = [], []


def drop_spilled(spill_dir: str) -> None:
    """At start-up: the spill files of transfers a crash cut short."""
    shutil.rmtree(spill_dir, ignore_errors=True)


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
    log: TransferLog = dataclasses.field(default_factory=lambda: TransferLog(None))
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
    finally:
        t.log.close()


def start(rt: ClusterRouter, t: Transfer) -> threading.Thread:
    th = threading.Thread(target=run, args=(rt, t), daemon=True,
                          name=f"quiver-transfer-{t.name}-{t.shard_id}")
    th.start()
    return th
