"""Collection snapshots of a cluster collection: every shard at one consistent cut, in one
ordinary single-node archive; recovery re-shards it onto the target's layout.

Create. A write barrier across the shards: the router's per-shard write locks (every write
of a shard holds its lock until its replicas answered) are all taken, in shard order as
`ClusterRouter.write` takes them, so no write is in flight on any shard; one Active replica of
each shard freezes its collection at its WAL sequence number (`ShardReplica.freeze_archive`,
all shards at once: masks copied, payloads serialized, row counts recorded) and the locks are
released: the barrier lasts the slowest shard's freeze, never an archive's write. Writes then
go on while every frozen shard writes its archive to its own local disk
(`ShardReplica.write_frozen`, all shards at once; a replica serves calls while it writes):
rows below a frozen count never change, so the archive holds exactly the frozen state, none of
the writes made since. Then the shard archives are merged,
one after the other, straight from the replicas (CHUNK pieces over Ray's object store) into
one archive in the front end's snapshots dir: manifest first, then every shard's members
renamed `segments/<i + offset>/…`, byte for byte (their sha256 are the shards' own). Each
replica's archive is removed once merged: the front end never stages a shard archive. The
archives of one cut share a tag: a replica whose freeze or write failed or timed out (its
archive's path never reached the front end) is told `drop_archive(tag)` and releases its frozen
state or removes its archive, now or once its call ends; so is every frozen replica when
another shard's freeze failed. A frozen state never written (the front end gone) is released
by the replica after `shard.FROZEN_TTL_S`.

The result is a normal Quiver collection archive (snapshots/archive.py): a single node
recovers it with no new code (the archive's config keeps `shard_number`; one node ignores
it). Its manifest also says where it came from:
`"cluster": {"shard_number": n, "shards": [{"shard_id", "seq", "segments": [first, end)}]}`;
its `seq` is the largest shard's (a single node continues its WAL past every row version).

Recover (location or upload). The archive is first recovered, through the single-node path
(snapshots/recovery.py: every hostile-archive check), into a scratch collection of the front
end's own catalog (it maps the archive: no copy); nothing in the cluster has changed if that
fails. The target layout: an existing cluster collection keeps its own config and layout
(`shard_number`, `replication_factor`, `write_consistency_factor`; its vectors must match the
archive's, else 400 as on one node); a new one takes the archive's config (its
`shard_number`, 1 when absent).

Atomic. The points go into a hidden collection, not into the target: `ClusterRouter.
create_hidden` records a new entry with the target's layout in the metadata under a name
starting with `.recovering-` (metadata.HIDDEN_PREFIX; a leading '.' is a name validate_name
refuses, so no user can create or recover into one) in its own section, `hidden`, never in
`collections`: no listing shows it, no route, alias or cluster operation can address it
(404, as any unknown collection). Its replicas are new actors (named by replica id, storage
by replica id, as every replica) holding the collection under the *target's* name, so once
swapped in every route (points, search, shard snapshots, transfers, collection snapshots)
addresses them exactly as any collection's: there is no rename and no indirection. It gets
the payload indexes, then the scratch collection's live points, scrolled in pages, split by
`split.shard_of` over its shards and applied on every one of its replicas (any replica
failing fails the recovery). Then `ClusterRouter.swap_in`, under every shard's write lock of
the target: one metadata save (`ClusterMetadata.swap_in`) makes the hidden entry the
target's, with the target's aliases, and moves the old entry's replicas to `retired`; the
router's cached state follows; the old replicas are then stopped and their directories
removed, and `retired` forgotten. A write lands wholly in the old collection or wholly in the
new one; readers see the old points until the swap, then the new ones. On any failure before
the swap (a replica lost, a call timing out, a cancelled task) the hidden collection's
replicas are dropped and then its record: the target is exactly as it was (points, config,
layout, aliases). A crash of the front end leaves either the hidden record (before the swap)
or retired replicas (after it): the router drops both at start-up, before it attaches any
replica (`ClusterRouter._drop_leftovers`), as `drop_scratch` drops the scratch collections.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from api.cluster import aliases, plans
from api.cluster.metadata import create_body
from api.cluster.runtime import is_actor_gone, is_timeout
from api.cluster.shard import raise_relayed
from api.cluster.split import split_write
from api.cluster.transfer import CALL_TIMEOUT_S, CHUNK
from api.parse import reads
from api.parse.writes import WRITES
from engine import jsonio, query, tasks
from engine.catalog import Catalog, validate_name
from engine.config import CollectionConfig, from_state
from engine.durable import io_error
from engine.errors import BadInput, BadRequest, ServiceError
from snapshots.archive import MANIFEST, HashingWriter, tar_size
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery
from snapshots.storage import Download, SnapshotInfo, check_snapshot_name

if TYPE_CHECKING:
    from api.cluster.router import ClusterRouter

log = logging.getLogger("quiver.cluster")

C = "/collections/{collection_name}"
P = C + "/points"
PAGE = 512  # points per scroll page and upsert while re-sharding
_SEGMENT = re.compile(r"^segments/(\d+)/(.+)$")
SCRATCH_PREFIX = "cluster-recover-"  # the front end's catalog holds nothing else in cluster mode


def drop_scratch(catalog: Catalog) -> list[str]:
    """Delete the scratch collections a recovery cut short by a crash left in the front end's
    catalog (at start-up, before anything recovers): they would stay forever otherwise."""
    gone = sorted(n for n in catalog.names() if n.startswith(SCRATCH_PREFIX))
    for name in gone:
        catalog.delete(name)
        log.warning("removed %s, left by an interrupted cluster recovery", name)
    return gone


def _real(rt: ClusterRouter, name: str) -> str:
    """The collection a name (or alias) stands for; 404 when none."""
    real = aliases.resolve(rt, name)
    rt._entry(real)
    return real


# ---------------------------------------------------------------- create


def create(rt: ClusterRouter, mgr: SnapshotManager, name: str) -> SnapshotInfo:
    real = _real(rt, name)
    validate_name(real)
    task = tasks.current()
    if task is not None:
        task.collection = real
    tasks.set_phase("preparing")
    try:
        fname = mgr._reserve_name(f"{real}-{mgr.node_id}", real)
    except OSError as exc:
        raise io_error(exc, "creating the snapshot") from None
    tmp = os.path.join(mgr.tmp, f"{uuid.uuid4().hex}.part")
    shards: list[tuple[int, Any, dict[str, Any]]] = []
    try:
        shards = _freeze(rt, real)
        checksum = _merge(rt, real, shards, tmp)
        if task is not None:
            mgr._publishing(task)
        return mgr.store.publish(tmp, real, fname, checksum)
    except OSError as exc:
        raise io_error(exc, "creating the snapshot") from None
    finally:
        for _, actor, arc in shards:
            actor.remove_file.remote(arc["path"])
        mgr._release(fname, tmp)


def _freeze(rt: ClusterRouter, name: str) -> list[tuple[int, Any, dict[str, Any]]]:
    """The barrier: every shard's write lock held while one Active replica per shard freezes
    its collection (`freeze_archive`); then, writes flowing again, every frozen shard's
    archive is written (`write_frozen`, all at once). [(shard id, its replica's actor,
    {path, size, checksum, seq})]."""
    n = rt._entry(name)["shard_number"]
    tag = uuid.uuid4().hex  # the replicas' name for this cut's frozen states and archives
    locks = [rt.shard_lock(name, s) for s in range(n)]
    for lk in locks:
        lk.acquire()
    started = time.perf_counter()
    try:
        actors = {s: rt.actor_of(rt._live(name, s)[0]) for s in range(n)}
        frozen, failed = _each(rt, {s: a.freeze_archive.remote(name, tag)
                                    for s, a in actors.items()}, actors, tag)
    finally:
        for lk in locks:
            lk.release()
    log.info("cluster snapshot of %s: write barrier held %.3f s", name,
             time.perf_counter() - started)
    if failed is not None:
        for s in frozen:  # their frozen states (and snapshot gates) released
            actors[s].drop_archive.remote(tag)
        raise ServiceError(f"snapshot of `{name}`: a shard replica failed ({failed})")
    written, failed = _each(rt, {s: actors[s].write_frozen.remote(tag) for s in frozen},
                            actors, tag)
    out = [(s, actors[s], written[s]) for s in sorted(written)]
    if failed is not None:
        for _, actor, arc in out:
            actor.remove_file.remote(arc["path"])
        raise ServiceError(f"snapshot of `{name}`: a shard replica failed ({failed})")
    return out


def _each(rt: ClusterRouter, refs: dict[int, Any], actors: dict[int, Any], tag: str
          ) -> tuple[dict[int, Any], Exception | None]:
    """Every shard's call under one deadline (`rt._gather`): ({shard: result} of those that
    answered, the first failure). A replica whose call failed or timed out (its result
    unknown here) is told `drop_archive(tag)`: it removes its frozen state or archive, now or
    once its call ends."""
    take = rt._gather(list(refs.values()))
    got: dict[int, Any] = {}
    failed: Exception | None = None
    for s, ref in refs.items():
        try:
            got[s] = take(ref)
        except Exception as exc:  # noqa: BLE001 - the caller undoes the others
            failed = failed or exc
            actors[s].drop_archive.remote(tag)
    return got, failed


class _RemoteFile(io.RawIOBase):
    """A replica's archive read sequentially in CHUNK pieces, the next one asked for ahead."""

    def __init__(self, rt: ClusterRouter, actor: Any, path: str, size: int) -> None:
        self.rt, self.actor, self.path, self.size = rt, actor, path, size
        self.off = 0  # of the next chunk to ask for
        self.buf = memoryview(b"")
        self.ahead = self._ask()

    def _ask(self) -> Any:
        if self.off >= self.size:
            return None
        ref = self.actor.read_chunk.remote(self.path, self.off, CHUNK)
        self.off += CHUNK
        return ref

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not len(self.buf):
            if self.ahead is None:
                return 0
            self.buf = memoryview(self.rt.ray.get(self.ahead, timeout=CALL_TIMEOUT_S))
            self.ahead = self._ask()
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def _open(rt: ClusterRouter, actor: Any, arc: dict[str, Any]) -> tarfile.TarFile:
    raw = io.BufferedReader(_RemoteFile(rt, actor, arc["path"], arc["size"]), CHUNK)
    return tarfile.open(fileobj=raw, mode="r|")


def _manifest_of(rt: ClusterRouter, actor: Any, arc: dict[str, Any]) -> dict[str, Any]:
    with _open(rt, actor, arc) as tar:
        info = tar.next()
        if info is None or info.name != MANIFEST:
            raise ServiceError("a shard archive does not start with its manifest")
        src = tar.extractfile(info)
        assert src is not None
        return jsonio.loads(src.read())


def _rename(name: str, offset: int) -> str:
    m = _SEGMENT.match(name)
    if m is None:
        raise ServiceError(f"unexpected shard archive member {name!r}")
    return f"segments/{int(m.group(1)) + offset}/{m.group(2)}"


def _merge(rt: ClusterRouter, name: str, shards: list[tuple[int, Any, dict[str, Any]]],
           dest: str) -> str:
    """One archive at `dest` (fsynced) from the shards' archives; its sha256."""
    manifests = [_manifest_of(rt, actor, arc) for _, actor, arc in shards]
    merged = {k: v for k, v in manifests[0].items() if k != "members"}
    segments: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []
    renames: list[dict[str, str]] = []
    origin: list[dict[str, Any]] = []
    for (sid, _, _arc), man in zip(shards, manifests, strict=True):
        off = len(segments)
        for seg in man["segments"]:
            segments.append({**seg, "index": seg["index"] + off})
        names = {m["name"]: _rename(m["name"], off) for m in man["members"]}
        members.extend({**m, "name": names[m["name"]]} for m in man["members"])
        renames.append(names)
        origin.append({"shard_id": sid, "seq": int(man["seq"]),
                       "segments": [off, len(segments)]})
    merged.update(collection=name, seq=max(o["seq"] for o in origin), aliases=[],
                  segments=segments, members=members,
                  created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                  cluster={"shard_number": len(shards), "shards": origin})
    raw = jsonio.dumps(merged, indent=True)
    now = int(time.time())

    def info(member: str, size: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(member)
        ti.size, ti.mode, ti.mtime = size, 0o644, now
        return ti

    total = tar_size([info(MANIFEST, len(raw))] + [info(m["name"], m["size"]) for m in members])
    tasks.begin("writing", total)
    with open(dest, "wb") as f:
        hw = HashingWriter(f, tasks.advance)
        try:
            with tarfile.open(fileobj=hw, mode="w", format=tarfile.GNU_FORMAT) as out:
                out.addfile(info(MANIFEST, len(raw)), io.BytesIO(raw))
                for (_, actor, arc), names in zip(shards, renames, strict=True):
                    _copy_members(rt, actor, arc, names, out, info)
                    actor.remove_file.remote(arc["path"])  # merged: its disk space back now
        finally:
            digest = hw.hexdigest()
        f.flush()
        os.fsync(f.fileno())
    return digest


def _copy_members(rt: ClusterRouter, actor: Any, arc: dict[str, Any], names: dict[str, str],
                  out: tarfile.TarFile, info: Any) -> None:
    copied = 0
    with _open(rt, actor, arc) as tar:
        for ti in tar:
            if ti.name == MANIFEST:
                continue
            new = names.get(ti.name)
            if new is None or not ti.isreg():
                raise ServiceError(f"unexpected shard archive member {ti.name!r}")
            src = tar.extractfile(ti)
            assert src is not None
            out.addfile(info(new, ti.size), src)
            copied += 1
            tasks.checkpoint()
    if copied != len(names):
        raise ServiceError("a shard archive lacks members its manifest lists")


# ---------------------------------------------------------------- list, download, delete


def list_snapshots(rt: ClusterRouter, mgr: SnapshotManager, name: str) -> list[SnapshotInfo]:
    return mgr.store.list(_real(rt, name))


def download(rt: ClusterRouter, mgr: SnapshotManager, name: str, snapshot: str) -> Download:
    return mgr.store.download(_real(rt, name), check_snapshot_name(snapshot))


def delete(rt: ClusterRouter, mgr: SnapshotManager, name: str, snapshot: str) -> bool:
    return mgr.store.delete(_real(rt, name), check_snapshot_name(snapshot))


# ---------------------------------------------------------------- recover


def recover_location(rt: ClusterRouter, mgr: SnapshotManager, rec: Recovery, name: str,
                     body: dict[str, Any]) -> bool:
    """A collection archive at a file:// (inside the snapshots dir) or http(s) location:
    fetched and checked as one node does (snapshots/recovery.py), then re-sharded."""
    return rec.recover_location(name, body, into=lambda path, checksum: recover_file(
        rt, rec, name, path, checksum))


def recover_file(rt: ClusterRouter, rec: Recovery, name: str, path: str,
                 checksum: str | None, source: str = "file") -> bool:
    """The archive at `path` (front end's disk) becomes cluster collection `name`: built
    whole in a hidden collection, then swapped in; on any failure before the swap the hidden
    collection is dropped and `name` is exactly as it was."""
    validate_name(name)
    if name in aliases.table(rt):
        raise BadRequest(f"`{name}` is an alias: recover into the collection itself")
    scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex}"
    catalog = rec.catalog
    rec.recover_file(scratch, path, checksum, source=source)  # every check of one node
    try:
        coll = catalog.get(scratch)
        body = _target_body(rt, name, coll.config.to_state())
        tasks.set_phase("resharding")
        params, q = {"collection_name": name}, {"wait": "true"}
        hidden, entry, cfg = rt.create_hidden(name, body, q)
        try:
            n = entry["shard_number"]
            for field, spec in coll.payload_schema.items():
                _apply(rt, name, entry, dict.fromkeys(range(n), {
                    "field_name": field, "field_schema": spec.get("params") or spec["type"]}),
                    "PUT", C + "/index", params, q)
            _reshard(rt, name, entry, cfg, coll, params, q)
            tasks.checkpoint()
            rt.swap_in(hidden, name, entry, cfg)
        except BaseException:
            rt.drop_hidden(hidden, entry)
            raise
        plans.forget(rt, name)
    finally:
        catalog.delete(scratch)
    return True


def _target_body(rt: ClusterRouter, name: str, state: dict[str, Any]) -> dict[str, Any]:
    """The create body: an existing collection's own, with its layout (its vectors must match
    the archive's), else the archive's config as a create body."""
    snap = from_state(state)
    entry = rt.state["collections"].get(name)
    if entry is not None:
        live = rt.configs[name]
        if snap.vectors != live.vectors or snap.multivectors != live.multivectors:
            raise BadInput("Snapshot is not compatible with existing collection: Collection "
                           f"vectors: {jsonio.dumps(live.vectors_echo).decode()} Snapshot "
                           f"Vectors: {jsonio.dumps(snap.vectors_echo).decode()}")
        return {**entry["config"], **{k: entry[k] for k in (
            "shard_number", "replication_factor", "write_consistency_factor")}}
    return create_body(state)


def _apply(rt: ClusterRouter, name: str, entry: dict[str, Any], bodies: dict[int, Any],
           method: str, template: str, params: dict[str, str], q: dict[str, str]) -> None:
    """A write on every replica of the hidden collection's shards in `bodies`, all at once.
    Every replica must apply it (nothing repairs a hidden collection): any failure raises."""
    refs = [(r, rt.actor_of(r).call.remote(method, template, params, q, bodies[s]))
            for s in sorted(bodies) for r in entry["shards"][str(s)]]
    take = rt._gather([ref for _, ref in refs])
    for r, ref in refs:
        try:
            got = take(ref)
        except Exception as exc:
            if not (is_actor_gone(exc) or is_timeout(exc)):
                raise
            raise ServiceError(f"recovering `{name}`: replica {r['replica_id']} of the new "
                               f"collection failed ({type(exc).__name__}); `{name}` is "
                               "unchanged") from None
        if "error" in got:
            raise_relayed(got)


def _reshard(rt: ClusterRouter, name: str, entry: dict[str, Any], cfg: CollectionConfig,
             coll: Any, params: dict[str, str], q: dict[str, str]) -> None:
    """Every live point of the scratch collection upserted into the hidden collection, page
    by page, each page split over its shards."""
    n = entry["shard_number"]
    offset: Any = None
    while True:
        req = reads.scroll_request({"limit": PAGE, "offset": offset, "with_payload": True,
                                    "with_vector": True})
        points, offset = query.scroll(coll, req)
        if points:
            body = {"points": [{"id": p["id"], "vector": p.get("vector") or {},
                                "payload": p.get("payload")} for p in points]}
            WRITES["upsert"](cfg, body)
            _apply(rt, name, entry, split_write("upsert", body, n), "PUT", P, params, q)
        tasks.checkpoint()
        if offset is None:
            return
