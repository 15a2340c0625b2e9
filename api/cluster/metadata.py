"""Cluster metadata: collections, shard placement and replica states, in one named detached
Ray actor that persists every change atomically (engine/durable.py) under
`<storage_path>/cluster/metadata.json` and reloads it when it is started again. No consensus
protocol of our own: one actor is the single writer; the front end caches what it returns.

State (JSON): {"collections": {name: {"config": create body, "shard_number", "replication_factor",
"write_consistency_factor", "shards": {"<shard id>": [replica, ...]}}}, "next_replica_id"}, a
replica being {"replica_id", "node_id", "state", "actor", "dir"}; states as Qdrant's:
Active, Dead, Partial, Recovery. "peers": {Ray node id: peer id}: the integer Qdrant's API shows
for a node, its id's first 52 bits (a JSON-safe integer), bumped past any collision, recorded
the first time the node is seen so that it never changes.

"hidden": {hidden name: entry}: collections being built by a recovery
(api/cluster/collection_snapshots.py), in no listing and addressable by no request (their names
start with HIDDEN_PREFIX, a name no user may create: it starts with '.'); their replicas hold
the collection under its public (target) name. `swap_in` makes one the public collection in a
single save; the replicas it replaces go to "retired": [replica, ...] until they are dropped.
The front end drops whatever hidden or retired replicas it finds at start-up (a crash left them).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import orjson

from engine.durable import write_atomic

ACTOR_NAME = "quiver-cluster-metadata"
HIDDEN_PREFIX = ".recovering-"  # validate_name refuses a leading '.': no user can name one
STATES = ("Active", "Dead", "Partial", "Recovery")


def metadata_path(storage_path: str) -> str:
    return os.path.join(storage_path, "cluster", "metadata.json")


def load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            state = orjson.loads(f.read())
    except FileNotFoundError:
        state = {}
    state.setdefault("collections", {})
    state.setdefault("next_replica_id", 1)
    state.setdefault("peers", {})
    state.setdefault("hidden", {})
    state.setdefault("retired", [])
    return state


def create_body(state: dict[str, Any]) -> dict[str, Any]:
    """A collection config's state (CollectionConfig.to_state) as the create body that
    builds it again."""
    body = {k: v for k, v in state.items() if k != "params" and v is not None}
    body.update({k: v for k, v in (state.get("params") or {}).items() if v is not None})
    return body


class ClusterMetadata:
    """The actor class (runtime wraps it with ray.remote, named ACTOR_NAME, detached)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.state = load(path)

    def _save(self) -> None:
        write_atomic(self.path, orjson.dumps(self.state, option=orjson.OPT_INDENT_2))

    def get(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)

    def new_replica_ids(self, n: int) -> list[int]:
        first = self.state["next_replica_id"]
        self.state["next_replica_id"] = first + n
        self._save()
        return list(range(first, first + n))

    def put_collection(self, name: str, entry: dict[str, Any]) -> None:
        self.state["collections"][name] = entry
        self._save()

    def drop_collection(self, name: str) -> bool:
        found = self.state["collections"].pop(name, None) is not None
        self._save()
        return found

    def set_config(self, name: str, body: dict[str, Any]) -> None:
        """A collection's create body after a config change (PATCH): what a restart, a new
        replica or a recovery builds it from."""
        coll = self.state["collections"].get(name)
        if coll is not None:
            coll["config"] = body
            self._save()

    def set_state(self, name: str, shard_id: int, replica_id: int, state: str) -> None:
        assert state in STATES
        coll = self.state["collections"].get(name)
        if coll is None:
            return
        for r in coll["shards"].get(str(shard_id), []):
            if r["replica_id"] == replica_id:
                r["state"] = state
        self._save()

    def peer_ids(self, node_ids: list[str]) -> dict[str, int]:
        """Every node's stable integer peer id (new nodes get one now)."""
        peers = self.state["peers"]
        taken = set(peers.values())
        fresh = False
        for node in node_ids:
            if node in peers:
                continue
            pid = int(node[:13], 16)
            while pid in taken:
                pid += 1
            peers[node] = pid
            taken.add(pid)
            fresh = True
        if fresh:
            self._save()
        return dict(peers)

    def set_node(self, name: str, shard_id: int, replica_id: int, node_id: str,
                 host: str | None) -> None:
        """A replica started again on another node of its host (Ray restarted: new node ids)."""
        coll = self.state["collections"].get(name)
        if coll is None:
            return
        for r in coll["shards"].get(str(shard_id), []):
            if r["replica_id"] == replica_id:
                r["node_id"], r["host"] = node_id, host
        self._save()

    def add_replica(self, name: str, shard_id: int, replica: dict[str, Any]) -> None:
        coll = self.state["collections"].get(name)
        if coll is None:
            return
        coll["shards"].setdefault(str(shard_id), []).append(replica)
        self._save()

    def remove_replica(self, name: str, shard_id: int, replica_id: int) -> None:
        coll = self.state["collections"].get(name)
        if coll is None:
            return
        reps = coll["shards"].get(str(shard_id), [])
        coll["shards"][str(shard_id)] = [r for r in reps if r["replica_id"] != replica_id]
        self._save()

    # ---- recovery's hidden collections (api/cluster/collection_snapshots.py)

    def put_hidden(self, name: str, entry: dict[str, Any]) -> None:
        assert name.startswith(HIDDEN_PREFIX)
        self.state["hidden"][name] = entry
        self._save()

    def drop_hidden(self, name: str) -> None:
        if self.state["hidden"].pop(name, None) is not None:
            self._save()

    def swap_in(self, hidden: str, name: str, aliases: list[str]) -> dict[str, Any] | None:
        """In one save: hidden collection `hidden` becomes collection `name` (with `aliases`);
        the replicas of the collection it replaces, if any, are retired. The replaced entry."""
        entry = self.state["hidden"].pop(hidden)
        entry["aliases"] = list(aliases)
        old = self.state["collections"].get(name)
        if old is not None:
            self.state["retired"].extend(r for reps in old["shards"].values() for r in reps)
        self.state["collections"][name] = entry
        self._save()
        return old

    def forget_retired(self, replica_ids: list[int]) -> None:
        """Retired replicas now dropped (actor stopped, directory removed)."""
        gone = set(replica_ids)
        self.state["retired"] = [r for r in self.state["retired"]
                                 if r["replica_id"] not in gone]
        self._save()
