"""The front end of a cluster: which shard holds which id, write fan-out, read scatter-gather.

In cluster mode every request that names a collection reaches `ClusterRouter.handle` (through
api/http.py's `clustered` wrapper, which REST and gRPC both run). Points are placed by a stable
hash of their id (`shard_of`); a write goes to every live replica of the shards it touches and
is acknowledged once `write_consistency_factor` of them applied it; a read asks one live replica
per shard and merges exactly (api/cluster/merge.py). A replica whose actor is gone is marked
Dead and the request carries on with the survivors. What is not built yet answers 400 naming it.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from api.cluster.metadata import (
    ACTOR_NAME,
    HIDDEN_PREFIX,
    ClusterMetadata,
    create_body,
    metadata_path,
)
from api.cluster.placement import actor_options, assign, placeable, wants_gpu
from api.cluster.runtime import alive_nodes, connect, is_actor_gone, is_timeout
from api.cluster.shard import ShardReplica, raise_relayed
from api.cluster.split import unsupported
from api.cluster.transfer import SPILL_DIR, Transfer, drop_spilled
from engine.catalog import validate_name
from engine.config import CollectionConfig, parse_create
from engine.errors import AlreadyExists, BadRequest, NotFound, ServiceError
from engine.ids import parse_id

log = logging.getLogger("quiver.cluster")

C = "/collections/{collection_name}"
P = C + "/points"
CALL_TIMEOUT_S = 300.0
WATCH_INTERVAL_S = 1.0  # how often replicas and nodes are checked (and repairs started)
PING_TIMEOUT_S = 5.0
# after a swap (swap_in), how long the replaced replicas keep serving the reads that picked
# them just before it, before they are stopped
RETIRE_GRACE_S = 1.0
# the request being handled, (template, body): a write split by shard names its first missing
# id in the request's order, as one node does
_REQUEST: ContextVar[tuple[str, Any] | None] = ContextVar("quiver_cluster_request",
                                                          default=None)


def _home(r: dict[str, Any], siblings: list[dict[str, Any]], nodes: dict[str, str]
          ) -> str | None:
    """The node (of `nodes`: placeable id → host) a replica whose actor is gone starts again
    on: its recorded node if live, else a node of its recorded host (one holding none of its
    shard's other replicas where there is a choice), else None (its data is on a host that is
    gone). Metadata without hosts (older): any node, when every live node is on one host."""
    if r["node_id"] in nodes:
        return str(r["node_id"])
    host = r.get("host")
    if host is None and len(set(nodes.values())) == 1:
        host = next(iter(nodes.values()))
    on_host = sorted(n for n, h in nodes.items() if h == host)
    taken = {x["node_id"] for x in siblings if x is not r}
    free = [n for n in on_host if n not in taken]
    return (free or on_host)[0] if on_host else None


class ClusterRouter:
    def __init__(self, app: Any, settings: Any, routes: list[Any]) -> None:
        self.app = app
        self.settings = settings
        self.cfg = settings.cluster
        self.ray = connect(self.cfg)
        self.templates: dict[tuple[int, str], str] = {}
        for route in routes:
            h = getattr(route.endpoint, "handler", None)
            if h is None:
                continue
            inner = getattr(h, "__wrapped__", h)
            for m in route.methods or ():
                self.templates.setdefault((id(inner), m), route.path)
        storage = settings.storage.storage_path
        self.replica_root = self.cfg.replica_storage_path or os.path.join(
            storage, "cluster", "replicas")
        # transfers' logged writes past their memory share (api/cluster/transfer.py)
        self.spill_dir = os.path.join(storage, "cluster", SPILL_DIR)
        drop_spilled(self.spill_dir)  # a crash's leftovers: those transfers are gone
        here = self.ray.get_runtime_context().get_node_id()
        meta_cls = self.ray.remote(ClusterMetadata)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415
        self.meta = meta_cls.options(
            name=ACTOR_NAME, namespace=self.cfg.namespace, lifetime="detached",
            get_if_exists=True, num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote(metadata_path(storage))
        self.replica_cls = self.ray.remote(ShardReplica)
        self.lock = threading.RLock()
        self.shard_locks: dict[tuple[str, int], threading.Lock] = {}
        self.actors: dict[str, Any] = {}
        self.rr = 0
        self.transfers: dict[tuple[str, int, int, int], Transfer] = {}
        self.dead_since: dict[int, float] = {}  # replica id → when it was marked Dead
        self.peer_of: dict[str, int] = {}
        self.state = self.ray.get(self.meta.get.remote())
        self._drop_leftovers()
        self.configs: dict[str, CollectionConfig] = {
            name: parse_create(e["config"], strict=False)
            for name, e in self.state["collections"].items()}
        self._reattach()
        self.closed = threading.Event()
        self.watcher = threading.Thread(target=self._watch, name="quiver-cluster-watch",
                                        daemon=True)
        self.watcher.start()

    # ---------------------------------------------------------------- actors and states

    def _reattach(self) -> None:
        """After a restart: find each live replica's actor by name, or start it again on its
        storage directory (a fresh Ray instance lost the actors, not the data). The directory
        is on its host's disk, so the replica starts again on a node of that host: after Ray
        itself restarted, the node ids are new but the hosts are not (`_home`)."""
        nodes: dict[str, str] | None = None
        for name, entry in self.state["collections"].items():
            for sid, reps in entry["shards"].items():
                for r in list(reps):
                    if r["state"] == "Dead":
                        self.dead_since[r["replica_id"]] = time.monotonic()
                        continue
                    if r["state"] == "Partial":  # its transfer ended with the old front end
                        self._remove_replica(name, int(sid), r)
                        continue
                    try:
                        self.actors[r["actor"]] = self.ray.get_actor(
                            r["actor"], namespace=self.cfg.namespace)
                    except ValueError:
                        if nodes is None:  # asked once, and only when an actor is gone
                            nodes = self._placeable()
                        node = _home(r, reps, nodes)
                        if node is None:  # its host is not in the cluster: repaired elsewhere
                            log.warning("replica %s of %s/%s: its host %s is not in the "
                                        "cluster", r["replica_id"], name, sid, r.get("host"))
                            continue  # no actor: the watcher marks it Dead
                        if node != r["node_id"]:
                            r["node_id"] = node
                            self.ray.get(self.meta.set_node.remote(
                                name, int(sid), r["replica_id"], node, r.get("host")))
                        self.actors[r["actor"]] = self._start(r["actor"], node, r["dir"])
                    log.info("replica %s of %s/%s attached", r["replica_id"], name, sid)

    def _placeable(self) -> dict[str, str]:
        """Live nodes a new replica may be pinned to → their hosts (placement.placeable)."""
        return placeable(alive_nodes(self.ray), wants_gpu(self.ray, self.cfg.gpu_per_replica))

    def _start(self, actor_name: str, node_id: str, storage_dir: str) -> Any:
        """A replica's actor on `node_id`: there or nowhere (see actor_options)."""
        opts = actor_options(self.ray, node_id, actor_name, self.cfg.namespace,
                             self.cfg.gpu_per_replica)
        return self.replica_cls.options(**opts).remote(self.settings, storage_dir)

    def _entry(self, name: str) -> dict[str, Any]:
        entry = self.state["collections"].get(name)
        if entry is None:
            raise NotFound(f"Collection `{name}` doesn't exist!")
        return entry

    def _mark_dead(self, name: str, sid: int, r: dict[str, Any]) -> None:
        with self.lock:
            if r["state"] == "Dead":
                return
            r["state"] = "Dead"
            self.dead_since[r["replica_id"]] = time.monotonic()
            self.actors.pop(r["actor"], None)
            for t in self.transfers.values():
                if r["replica_id"] in (t.source["replica_id"], t.target["replica_id"]):
                    t.abort(f"replica {r['replica_id']} is gone")
        log.warning("replica %s of %s/%s is gone: marked Dead", r["replica_id"], name, sid)
        self.ray.get(self.meta.set_state.remote(name, sid, r["replica_id"], "Dead"))

    def _live(self, name: str, sid: int) -> list[dict[str, Any]]:
        reps = [r for r in self._entry(name)["shards"][str(sid)] if r["state"] == "Active"]
        if not reps:
            raise ServiceError(f"No active replica of shard {sid} of collection `{name}`")
        return reps

    def actor_of(self, r: dict[str, Any]) -> Any:
        actor = self.actors.get(r["actor"])
        if actor is None:
            raise ServiceError(f"replica {r['replica_id']} has no actor")
        return actor

    def _submit(self, r: dict[str, Any], method: str, template: str, params: dict[str, str],
                query: dict[str, str], body: Any) -> Any:
        return self.actor_of(r).call.remote(method, template, params, query, body)

    def _gather(self, refs: list[Any]) -> Callable[[Any], Any]:
        """Wait for every call at once, under one deadline (CALL_TIMEOUT_S from now): one
        ray.get, so the request thread wakes once, not once per shard. Returns `take(ref)`:
        that call's result, or what its own ray.get raises. When the joint get failed (a
        replica gone, a timeout, an error), each ref is asked alone with the time left,
        never a second full wait."""
        deadline = time.monotonic() + CALL_TIMEOUT_S
        try:
            values: dict[Any, Any] | None = dict(zip(refs, self.ray.get(
                refs, timeout=CALL_TIMEOUT_S), strict=True))
        except Exception:  # noqa: BLE001 - sorted out per ref by take()
            values = None

        def take(ref: Any) -> Any:
            if values is not None:
                return values[ref]
            return self.ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        return take

    def shard_lock(self, name: str, sid: int) -> threading.Lock:
        """The lock that serialises one shard's writes (and a transfer's last steps)."""
        with self.lock:
            return self.shard_locks.setdefault((name, sid), threading.Lock())

    # ---------------------------------------------------------------- reads and writes

    def read(self, name: str, calls: dict[int, tuple[str, str, Any]],
             params: dict[str, str], query: dict[str, str]) -> dict[int, Any]:
        """One call per shard ({shard: (method, template, body)}) on one live replica each
        (rotating); a replica found gone is marked Dead and the next one asked. One that only
        ran past the call timeout is slow, not gone: the next one is asked, nothing marked."""
        pending = {sid: list(self._live(name, sid)) for sid in calls}
        self.rr += 1
        for sid, reps in pending.items():
            k = self.rr % len(reps)
            pending[sid] = reps[k:] + reps[:k]
        out: dict[int, Any] = {}
        while pending:
            refs = {}
            for sid, reps in pending.items():
                method, template, body = calls[sid]
                refs[sid] = (reps[0], self._submit(reps[0], method, template, params, query,
                                                   body))
            retry: dict[int, list[dict[str, Any]]] = {}
            take = self._gather([ref for _, ref in refs.values()])
            for sid, (r, ref) in refs.items():
                try:
                    got = take(ref)
                except Exception as exc:
                    slow = is_timeout(exc)
                    if not (slow or is_actor_gone(exc)):
                        raise
                    if not slow:
                        self._mark_dead(name, sid, r)
                    rest = pending[sid][1:]
                    if not rest and slow:
                        raise ServiceError(f"shard {sid} of `{name}`: no replica answered "
                                           f"within {CALL_TIMEOUT_S:g} s") from None
                    if not rest:
                        raise ServiceError(f"No active replica of shard {sid} of collection "
                                           f"`{name}`") from None
                    retry[sid] = rest
                    continue
                if "error" in got:
                    raise_relayed(got)
                out[sid] = got["result"]
            pending = retry
        return out

    def read_all(self, name: str, method: str, template: str, params: dict[str, str],
                 query: dict[str, str], body: Any) -> list[Any]:
        n = self._entry(name)["shard_number"]
        got = self.read(name, {s: (method, template, body) for s in range(n)}, params, query)
        return [got[s] for s in range(n)]

    def write(self, name: str, bodies: dict[int, Any], method: str, template: str,
              params: dict[str, str], query: dict[str, str]) -> Any:
        """Apply to every live replica of each shard in `bodies`; per shard, writes are
        serialised (replicas apply them in one order). Acknowledged once
        write_consistency_factor replicas of every shard have it. A write by ids that needs
        them all to exist (set_payload, update_vectors, ...) is checked first on every shard:
        one missing id is a 404 and no shard gets the write, as on one node."""
        entry = self._entry(name)
        sids = sorted(bodies)
        locks = [self.shard_lock(name, s) for s in sids]
        for lk in locks:
            lk.acquire()
        try:
            self._check_existing(name, bodies, method, template, params)
            refs = [(s, r, self._submit(r, method, template, params, query, bodies[s]))
                    for s in sids for r in self._live(name, s)]
            acks: dict[int, int] = {}
            result = None
            refused: dict[int, list[tuple[dict[str, Any], Any]]] = {}  # shard → (replica, error)
            answers: dict[int, Any] = {}  # replica id → its result
            for s, r, ref in refs:
                try:
                    got = self.ray.get(ref, timeout=CALL_TIMEOUT_S)
                except Exception as exc:
                    # a write that timed out may or may not be applied there: not trusted
                    if not (is_actor_gone(exc) or is_timeout(exc)):
                        raise
                    self._mark_dead(name, s, r)
                    continue
                if "error" in got:
                    refused.setdefault(s, []).append((r, got))
                    continue
                answers[r["replica_id"]] = got["result"]
                acks[s] = acks.get(s, 0) + 1
                if result is None or _seq(got["result"]) > _seq(result):
                    result = got["result"]
            error = None
            for s, bad in refused.items():
                if not acks.get(s):
                    error = error or bad[0][1]  # every replica refused it: the client's error
                    continue
                for r, got in bad:  # its peers applied it: it diverged, repair rebuilds it
                    log.warning("replica %s of %s/%s refused a write its peers applied: %s",
                                r["replica_id"], name, s, got["error"])
                    self._mark_dead(name, s, r)
            self._log_for_transfers(name, sids, answers, method, template, params, query,
                                    bodies)
        finally:
            for lk in locks:
                lk.release()
        if error is not None:
            raise_relayed(error)
        need = min(entry["write_consistency_factor"], entry["replication_factor"])
        for s in sids:
            if acks.get(s, 0) < need:
                raise ServiceError(f"shard {s} of `{name}`: {acks.get(s, 0)} of {need} "
                                   "replicas acknowledged the write")
        return result

    def _check_existing(self, name: str, bodies: dict[int, Any], method: str, template: str,
                        params: dict[str, str]) -> None:
        """Under the shards' write locks, before any replica sees the write: for a write by
        explicit ids that needs them to exist (engine Operation.requires_existing), ask one
        replica per shard which of its ids it holds; any missing → NotFound naming the first
        in the request's order, the message Collection.write gives."""
        from api.cluster.operations import WRITE_ROUTES  # noqa: PLC0415 - it imports here
        from api.parse.writes import WRITES  # noqa: PLC0415

        kind = next((k for k, route in WRITE_ROUTES.items() if route == (method, template)),
                    None)
        if kind is None:
            return
        cfg = self.configs[name]
        wanted: dict[int, list[Any]] = {}
        for s, b in bodies.items():
            op = WRITES[kind](cfg, b)
            if op.requires_existing and op.filter is None and op.ids:
                wanted[s] = list(op.ids)
        if not wanted:
            return
        calls = {s: ("POST", P, {"ids": ids, "with_payload": False, "with_vector": False})
                 for s, ids in wanted.items()}
        got = self.read(name, calls, {"collection_name": params["collection_name"]}, {})
        held = {parse_id(p["id"]) for points in got.values() for p in points}
        missing = [i for s in sorted(wanted) for i in wanted[s] if i not in held]
        if not missing:
            return
        first = missing[0]
        req = _REQUEST.get()
        if req is not None and req[0] == template and len(missing) > 1:
            order = WRITES[kind](cfg, req[1]).ids  # the whole request, before the split
            pos = {pid: k for k, pid in enumerate(order)}
            first = min(missing, key=lambda i: pos.get(i, len(pos)))
        raise NotFound(f"No point with id {first} found")

    def _log_for_transfers(self, name: str, sids: list[int], answers: dict[int, Any],
                           method: str, template: str, params: dict[str, str],
                           query: dict[str, str], bodies: dict[int, Any]) -> None:
        """Under the shards' write locks: every transfer into one of these shards logs the
        write with the sequence number its source gave it (api/cluster/transfer.py)."""
        from api.cluster.transfer import write_seq  # noqa: PLC0415

        for t in list(self.transfers.values()):
            if t.name != name or t.shard_id not in sids:
                continue
            if t.source["replica_id"] not in answers:
                continue  # the source refused it (an error: nothing to copy) or is gone
            got = answers[t.source["replica_id"]]
            t.log.append((write_seq(got), method, template, dict(params), dict(query),
                          bodies[t.shard_id]))

    def broadcast(self, name: str, method: str, template: str, params: dict[str, str],
                  query: dict[str, str], body: Any) -> Any:
        n = self._entry(name)["shard_number"]
        return self.write(name, dict.fromkeys(range(n), body), method, template, params,
                          query)

    # ---------------------------------------------------------------- the hook

    def handle(self, fn: Callable[[Any, Any], Any], request: Any, body: Any) -> Any:
        template = self.templates.get((id(fn), request.method))
        if template is None or not template.startswith(("/collections", "/aliases",
                                                          "/snapshots")) \
                or template == C + "/cluster" or template.startswith(C + "/shards/") \
                or template.startswith(C + "/snapshots"):
            # service routes, the cluster routes, shard and collection snapshots (they ask
            # the router: api/cluster/shard_snapshots.py, collection_snapshots.py)
            return fn(request, body)
        from api.cluster.operations import OPS  # noqa: PLC0415 - it calls back into here

        op = OPS.get((request.method, template))
        if op is None:
            raise unsupported(f"{request.method} {template}")
        token = _REQUEST.set((template, body))
        try:
            return op(self, request, template, body)
        finally:
            _REQUEST.reset(token)

    # ---------------------------------------------------------------- collections

    def create(self, name: str, body: Any, params: dict[str, str],
               query: dict[str, str]) -> bool:
        validate_name(name)
        if body is None:
            raise BadRequest("Format error in JSON body: EOF while parsing a value")
        if not isinstance(body, dict):
            raise BadRequest("collection config must be a JSON object")
        if body.get("sharding_method") not in (None, "auto"):
            raise unsupported("sharding_method `custom` (shard keys)")
        if body.get("init_from") is not None:
            raise unsupported("init_from")
        cfg = parse_create(body)
        with self.lock:
            if name in self.state["collections"]:
                raise AlreadyExists(f"Collection `{name}` already exists!")
            entry = self._new_entry(body, cfg)
            self._start_entry(entry, params, query)
            self.ray.get(self.meta.put_collection.remote(name, entry))
            self.state["collections"][name] = entry
            self.configs[name] = cfg
        return True

    def _new_entry(self, body: dict[str, Any], cfg: CollectionConfig) -> dict[str, Any]:
        """A collection's metadata entry: its replicas placed over the live nodes, ids taken;
        nothing started yet."""
        shards = int(cfg.params["shard_number"] or 1)
        rf = int(cfg.params["replication_factor"] or 1)
        wcf = int(cfg.params["write_consistency_factor"] or 1)
        nodes = self._placeable()
        if not nodes:
            raise ServiceError("no live Ray node can host a replica (when replicas ask for "
                               "a GPU, cluster.gpu_per_replica, only nodes with one can)")
        ids = self.ray.get(self.meta.new_replica_ids.remote(shards * rf))
        layout = assign(list(nodes), shards, rf)
        return {"config": body, "shard_number": shards, "replication_factor": rf,
                "write_consistency_factor": wcf,
                "shards": {str(s): [{"replica_id": ids[s * rf + r], "node_id": layout[s][r],
                                     "host": nodes[layout[s][r]], "state": "Active",
                                     "actor": f"quiver-replica-{ids[s * rf + r]}",
                                     "dir": os.path.join(self.replica_root,
                                                         str(ids[s * rf + r]))}
                                    for r in range(rf)] for s in range(shards)}}

    def _start_entry(self, entry: dict[str, Any], params: dict[str, str],
                     query: dict[str, str]) -> None:
        """Every replica's actor started and the collection (`params`' name) created in it;
        on any failure the ones started are dropped again."""
        started = []
        try:
            for reps in entry["shards"].values():
                for rep in reps:
                    self.actors[rep["actor"]] = self._start(rep["actor"], rep["node_id"],
                                                            rep["dir"])
                    started.append(rep)
            refs = [self._submit(r, "PUT", C, params, query, entry["config"])
                    for r in started]
            for got in self.ray.get(refs, timeout=CALL_TIMEOUT_S):
                if "error" in got:
                    raise_relayed(got)
        except BaseException:
            self._drop_replicas(started)
            raise

    def update_config(self, name: str, cfg: CollectionConfig) -> None:
        """After a config change applied on every replica (PATCH): the front end's copy and
        the metadata's create body follow it, so a restart, a repair's new replica and a
        recovery into the collection build it as it is now, not as it was created."""
        body = create_body(cfg.to_state())
        with self.lock:
            entry = self._entry(name)
            self.ray.get(self.meta.set_config.remote(name, body))
            entry["config"] = body
            self.configs[name] = cfg

    # ---- hidden collections: a recovery builds one, then swaps it in (collection_snapshots)

    def create_hidden(self, name: str, body: dict[str, Any],
                      query: dict[str, str]) -> tuple[str, dict[str, Any], CollectionConfig]:
        """A new collection with `body`'s config, recorded (before any replica starts) under a
        hidden name in the metadata, never in `state["collections"]`: no request sees it. Its
        replicas hold it as `name`, so that once swapped in every route addresses them as
        any collection's. (hidden name, entry, config)."""
        cfg = parse_create(body)
        hidden = f"{HIDDEN_PREFIX}{uuid.uuid4().hex}"
        entry = self._new_entry(body, cfg)
        self.ray.get(self.meta.put_hidden.remote(hidden, entry))
        try:
            self._start_entry(entry, {"collection_name": name}, query)
        except BaseException:
            self.ray.get(self.meta.drop_hidden.remote(hidden))
            raise
        return hidden, entry, cfg

    def drop_hidden(self, hidden: str, entry: dict[str, Any]) -> None:
        """A hidden collection's replicas stopped and removed, then its metadata record."""
        self._drop_replicas([r for reps in entry["shards"].values() for r in reps])
        self.ray.get(self.meta.drop_hidden.remote(hidden))

    def swap_in(self, hidden: str, name: str, entry: dict[str, Any],
                cfg: CollectionConfig) -> None:
        """Hidden collection `hidden` becomes collection `name`, keeping `name`'s aliases: one
        metadata save (`ClusterMetadata.swap_in`) under every shard's write lock, so a write
        lands wholly before (in the old replicas) or after (in the new ones). The replaced
        collection's replicas are then dropped (retired in the metadata until they are)."""
        old = self.state["collections"].get(name)
        n = max(entry["shard_number"], old["shard_number"] if old else 0)
        locks = [self.shard_lock(name, s) for s in range(n)]
        for lk in locks:
            lk.acquire()
        try:
            with self.lock:
                old = self.state["collections"].get(name)
                entry["aliases"] = list(old.get("aliases", ())) if old else []
                self.ray.get(self.meta.swap_in.remote(hidden, name, entry["aliases"]))
                self.state["collections"][name] = entry
                self.configs[name] = cfg
                for t in self.transfers.values():
                    if t.name == name:
                        t.abort("the collection was replaced by a snapshot recovery")
        finally:
            for lk in locks:
                lk.release()
        if old is None:
            return
        retired = [r for reps in old["shards"].values() for r in reps]
        for r in retired:
            self.dead_since.pop(r["replica_id"], None)
        time.sleep(RETIRE_GRACE_S)
        try:  # swapped: nothing may fail the recovery now (the caller would undo it)
            self._drop_replicas(retired)
            self.ray.get(self.meta.forget_retired.remote([r["replica_id"] for r in retired]))
        except Exception:  # noqa: BLE001 - still retired in the metadata: dropped at start-up
            log.exception("dropping the replicas %s replaced in %s",
                          [r["replica_id"] for r in retired], name)

    def _drop_leftovers(self) -> None:
        """At start-up, before any replica is attached: hidden collections a crash left
        mid-recovery, and replicas a swap retired but did not get to drop."""
        for hidden, entry in self.state.pop("hidden", {}).items():
            self.drop_hidden(hidden, entry)
            log.warning("removed %s, left by an interrupted cluster recovery", hidden)
        retired = self.state.pop("retired", [])
        if retired:
            self._drop_replicas(retired)
            self.ray.get(self.meta.forget_retired.remote([r["replica_id"] for r in retired]))

    def _drop_replicas(self, reps: list[dict[str, Any]]) -> None:
        for r in reps:
            actor = self.actors.pop(r["actor"], None)
            if actor is None:
                try:
                    actor = self.ray.get_actor(r["actor"], namespace=self.cfg.namespace)
                except ValueError:
                    actor = None
            if actor is not None:
                try:
                    self.ray.get(actor.close.remote(), timeout=30)
                except Exception:  # noqa: BLE001 - gone already: nothing to close
                    pass
                self.ray.kill(actor)
            shutil.rmtree(r["dir"], ignore_errors=True)

    def delete(self, name: str) -> bool:
        with self.lock:
            entry = self.state["collections"].get(name)
            if entry is None:
                return False
            self.ray.get(self.meta.drop_collection.remote(name))
            del self.state["collections"][name]
            self.configs.pop(name, None)
        self._drop_replicas([r for reps in entry["shards"].values() for r in reps])
        return True

    def info(self, name: str, params: dict[str, str], query: dict[str, str]) -> dict[str, Any]:
        entry = self._entry(name)
        infos = self.read_all(name, "GET", C, params, query, None)
        out = copy.deepcopy(infos[0])
        for key in ("points_count", "indexed_vectors_count", "segments_count",
                    "vectors_count"):
            if key in out and out[key] is not None:
                out[key] = sum(i.get(key) or 0 for i in infos)
        schema = out.get("payload_schema") or {}
        for field, spec in schema.items():
            if isinstance(spec, dict) and "points" in spec:
                spec["points"] = sum(((i.get("payload_schema") or {}).get(field) or {})
                                     .get("points", 0) for i in infos)
        states = [r["state"] for reps in entry["shards"].values() for r in reps]
        if any(i.get("status") == "red" for i in infos):
            out["status"] = "red"
        elif any(s != "Active" for s in states) or any(i.get("status") == "yellow"
                                                       for i in infos):
            out["status"] = "yellow"
        return out

    def cluster_info(self, name: str, peer_id: int) -> dict[str, Any]:
        """Qdrant's CollectionClusterInfo: every replica lives in an actor, not in this
        front end, so all are remote shards (peer id: the replica's Ray node), and the
        transfers under way."""
        entry = self._entry(name)
        remote = [{"shard_id": int(sid), "peer_id": self.peer_id(r["node_id"]),
                   "state": r["state"]}
                  for sid, reps in sorted(entry["shards"].items(), key=lambda kv: int(kv[0]))
                  for r in reps]
        moving = [t.info() for t in list(self.transfers.values()) if t.name == name]
        return {"peer_id": peer_id, "shard_count": entry["shard_number"], "local_shards": [],
                "remote_shards": remote, "shard_transfers": moving}

    def peer_id(self, node_id: str) -> int:
        """A Ray node's stable integer peer id (recorded in the metadata)."""
        pid = self.peer_of.get(node_id)
        if pid is None:
            self.peer_of = self.ray.get(self.meta.peer_ids.remote([node_id]))
            pid = self.peer_of[node_id]
        return pid

    def node_of_peer(self, peer: int) -> str | None:
        """The live node with this peer id, if any."""
        for n in alive_nodes(self.ray):
            if self.peer_id(n["NodeID"]) == peer:
                return n["NodeID"]
        return None

    def peers(self) -> dict[str, dict[str, str]]:
        return {str(self.peer_id(n["NodeID"])): {"uri": f"ray://{n['NodeManagerAddress']}"}
                for n in alive_nodes(self.ray)}

    # ---------------------------------------------------------------- replicas and transfers

    def _remove_replica(self, name: str, sid: int, r: dict[str, Any]) -> None:
        """Out of the layout (metadata first), its actor stopped, its storage removed."""
        with self.lock:
            entry = self.state["collections"].get(name)
            if entry is not None:
                entry["shards"][str(sid)] = [x for x in entry["shards"][str(sid)]
                                             if x["replica_id"] != r["replica_id"]]
            self.dead_since.pop(r["replica_id"], None)
        self.ray.get(self.meta.remove_replica.remote(name, sid, r["replica_id"]))
        self._drop_replicas([r])

    def begin_transfer(self, name: str, sid: int, source: dict[str, Any], node_id: str,
                       sync: bool, replaces: int | None = None) -> Transfer:
        """A new replica of shard `sid` on `node_id` (Partial), filled from `source` by a
        transfer running in its own thread (api/cluster/transfer.py)."""
        from api.cluster import transfer  # noqa: PLC0415

        rid = self.ray.get(self.meta.new_replica_ids.remote(1))[0]
        rep = {"replica_id": rid, "node_id": node_id, "host": self._placeable().get(node_id),
               "state": "Partial", "actor": f"quiver-replica-{rid}",
               "dir": os.path.join(self.replica_root, str(rid))}
        actor = self._start(rep["actor"], node_id, rep["dir"])
        try:
            self.ray.get(actor.ping.remote(), timeout=CALL_TIMEOUT_S)
        except Exception:
            self.ray.kill(actor)
            raise
        t = Transfer(name, sid, source, rep, self.peer_id(source["node_id"]),
                     self.peer_id(node_id), sync, replaces,
                     log=transfer.TransferLog(
                         self.spill_dir, int(self.cfg.transfer_log_memory_mb * (1 << 20))))
        with self.shard_lock(name, sid):  # from here on every write of the shard is logged
            with self.lock:
                entry = self._entry(name)
                busy = [x for x in self.transfers.values()
                        if x.name == name and x.shard_id == sid]
                if busy:  # a concurrent request won: one transfer per shard at a time
                    self.ray.kill(actor)
                    raise BadRequest(f"Shard {sid} is already involved in transfer "
                                     f"{busy[0].from_peer} -> {busy[0].to_peer}")
                self.actors[rep["actor"]] = actor
                entry["shards"][str(sid)] = entry["shards"][str(sid)] + [rep]
                self.transfers[t.key()] = t
            self.ray.get(self.meta.add_replica.remote(name, sid, rep))
        transfer.start(self, t)
        return t

    def transfer_done(self, t: Transfer) -> None:
        """Under the shard's write lock, the log replayed: the target is Active; a move drops
        its source, a repair the Dead replica it replaces."""
        t.target["state"] = "Active"
        self.ray.get(self.meta.set_state.remote(t.name, t.shard_id, t.target["replica_id"],
                                                "Active"))
        with self.lock:
            self.transfers.pop(t.key(), None)
        entry = self.state["collections"].get(t.name)
        reps = entry["shards"][str(t.shard_id)] if entry else []
        for r in reps:
            if (not t.sync and r["replica_id"] == t.source["replica_id"]) \
                    or r["replica_id"] == t.replaces:
                self._remove_replica(t.name, t.shard_id, r)

    def transfer_failed(self, t: Transfer) -> None:
        with self.lock:
            self.transfers.pop(t.key(), None)
        if t.name in self.state["collections"]:
            self._remove_replica(t.name, t.shard_id, t.target)

    def drop_replica(self, name: str, sid: int, r: dict[str, Any]) -> None:
        with self.shard_lock(name, sid):
            self._remove_replica(name, sid, r)

    # ---------------------------------------------------------------- failure and repair

    def _watch(self) -> None:
        """Proactive failure detection and repair, every WATCH_INTERVAL_S."""
        while not self.closed.wait(WATCH_INTERVAL_S):
            try:
                self._detect()
                self._repair()
            except Exception:  # noqa: BLE001 - the watcher must outlive one bad round
                log.exception("cluster watch round failed")

    def _detect(self) -> None:
        """Replicas on a node Ray reports gone, or whose actor is dead, are marked Dead."""
        alive = {n["NodeID"] for n in alive_nodes(self.ray)}
        pings = []
        for name, entry in list(self.state["collections"].items()):
            for sid, reps in list(entry["shards"].items()):
                for r in reps:
                    if r["state"] == "Dead":
                        continue
                    actor = self.actors.get(r["actor"])
                    if r["node_id"] not in alive or actor is None:
                        self._mark_dead(name, int(sid), r)
                    else:
                        pings.append((name, int(sid), r, actor.ping.remote()))
        if not pings:
            return
        done, _ = self.ray.wait([p[3] for p in pings], num_returns=len(pings),
                                timeout=PING_TIMEOUT_S)
        finished = set(done)
        for name, sid, r, ref in pings:
            if ref not in finished:
                continue  # busy, not known gone: asked again next round
            try:
                self.ray.get(ref, timeout=0)
            except Exception as exc:  # noqa: BLE001
                if is_actor_gone(exc):
                    self._mark_dead(name, sid, r)

    def _repair(self) -> None:
        """Each shard with a replica Dead for cluster.repair_after_s gets a new one on a live node
        that holds none of that shard (the least loaded), filled from an Active replica."""
        now = time.monotonic()
        nodes = list(self._placeable())
        for name, entry in list(self.state["collections"].items()):
            load = {n: 0 for n in nodes}
            for reps in entry["shards"].values():
                for r in reps:
                    if r["state"] != "Dead" and r["node_id"] in load:
                        load[r["node_id"]] += 1
            for sid, reps in list(entry["shards"].items()):
                if any(t.name == name and t.shard_id == int(sid)
                       for t in list(self.transfers.values())):
                    continue
                dead = [r for r in reps if r["state"] == "Dead"
                        and now - self.dead_since.get(r["replica_id"], now)
                        >= self.cfg.repair_after_s]
                active = [r for r in reps if r["state"] == "Active"]
                if not dead or not active:
                    continue
                holding = {r["node_id"] for r in reps if r["state"] != "Dead"}
                free = [n for n in nodes if n not in holding]
                if not free:
                    continue  # no node to put it on: it stays Dead until one joins
                node = min(free, key=lambda n: load[n])
                log.warning("repairing %s/%s: new replica on node %s", name, sid, node)
                self.begin_transfer(name, int(sid), active[0], node, sync=True,
                                    replaces=dead[0]["replica_id"])
                load[node] += 1

    def close(self) -> None:
        """Stop the watcher (at shutdown, before Ray goes: a round in flight would fail)."""
        self.closed.set()
        if self.watcher is not threading.current_thread():
            self.watcher.join(PING_TIMEOUT_S + 5)

    def check_replicas(self) -> None:
        """Ask every Active replica whether it is alive; the gone are marked Dead."""
        for name, entry in list(self.state["collections"].items()):
            for sid, reps in entry["shards"].items():
                for r in reps:
                    if r["state"] != "Active":
                        continue
                    actor = self.actors.get(r["actor"])
                    try:
                        if actor is None:
                            raise ServiceError("no actor")
                        self.ray.get(actor.ping.remote(), timeout=30)
                    except Exception as exc:  # noqa: BLE001 - any failure: it is gone
                        if isinstance(exc, ServiceError) or is_actor_gone(exc) \
                                or is_timeout(exc):
                            self._mark_dead(name, int(sid), r)


def _seq(result: Any) -> int:
    return result.get("operation_id", 0) if isinstance(result, dict) else 0
