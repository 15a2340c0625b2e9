"""Recovering a collection snapshot into a cluster collection is atomic
(api/cluster/collection_snapshots.py): the points go into a hidden collection that is swapped
in whole. Driven in process, on a front end of our own (create_app in cluster mode, joined to
the test Ray cluster) so that a replica of the hidden collection can be killed at an exact
point of the re-sharding: the target must then be exactly as it was."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from api.app import all_routes, create_app
from api.cluster import aliases, operations
from api.cluster import collection_snapshots as cs
from api.cluster.metadata import HIDDEN_PREFIX
from api.cluster.router import ClusterRouter
from api.cluster.split import split_write
from api.parse.writes import WRITES
from api.settings import load_settings
from engine.errors import BadRequest, EngineError, NotFound

ray = pytest.importorskip("ray")

C = "/collections/{collection_name}"
P = C + "/points"
Q = {"wait": "true"}
DIM = 4
TARGET = "atomic"
OLD = {i: {"g": f"old{i % 3}"} for i in range(1000, 1030)}  # the target's points
NEW = {i: {"g": f"new{i % 5}"} for i in range(300)}  # the archive's


def _vectors(ids: list[int]) -> list[list[float]]:
    rng = np.random.default_rng(len(ids))
    return rng.standard_normal((len(ids), DIM)).tolist()


def _body(points: dict[int, dict[str, str]]) -> dict[str, Any]:
    ids = list(points)
    return {"points": [{"id": i, "vector": v, "payload": points[i]}
                       for i, v in zip(ids, _vectors(ids), strict=True)]}


@pytest.fixture(scope="module")
def front(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A front end in this process (its router, catalog and recovery), in its own namespace."""
    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, log_to_driver=False)
    base = tmp_path_factory.mktemp("atomic")
    namespace = f"q{uuid.uuid4().hex[:8]}"
    settings = load_settings(env={
        "QUIVER__STORAGE__STORAGE_PATH": str(base / "storage"),
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"),
        "QUIVER__CLUSTER__ENABLED": "true",
        "QUIVER__CLUSTER__RAY_ADDRESS": ray_cluster.address,
        "QUIVER__CLUSTER__NAMESPACE": namespace,
        "QUIVER__CLUSTER__REPAIR_AFTER_S": "3600",
    })
    app = create_app(settings)
    try:
        yield app
    finally:
        app.state.cluster.close()
        app.state.catalog.close()
        from ray.util import list_named_actors

        for a in list_named_actors(all_namespaces=True):
            if a["namespace"] == namespace:
                try:
                    ray.kill(ray.get_actor(a["name"], namespace=namespace))
                except Exception:  # noqa: BLE001 - already gone
                    pass


@pytest.fixture(scope="module")
def archive(front: Any) -> str:
    """A single-node archive of NEW (payload index on `g`), written by the front end's own
    snapshot manager from a collection of its own catalog."""
    catalog, mgr = front.state.catalog, front.state.snapshots
    coll = catalog.create("seed", {"vectors": {"size": DIM, "distance": "Dot"}})
    coll.write(WRITES["upsert"](coll.config, _body(NEW)))
    coll.create_index("g", "keyword")
    path = os.path.join(mgr.tmp, "seed.snapshot")
    mgr.write_collection_archive("seed", path)
    catalog.delete("seed")
    return path


@pytest.fixture(scope="module")
def target(front: Any) -> ClusterRouter:
    """Cluster collection TARGET: 2 shards, a payload index, OLD, an alias."""
    rt: ClusterRouter = front.state.cluster
    params = {"collection_name": TARGET}
    rt.create(TARGET, {"vectors": {"size": DIM, "distance": "Dot"}, "shard_number": 2},
              params, Q)
    rt.broadcast(TARGET, "PUT", C + "/index", params, Q,
                 {"field_name": "g", "field_schema": "keyword"})
    rt.write(TARGET, split_write("upsert", _body(OLD), 2), "PUT", P, params, Q)
    aliases.update(rt, [{"create_alias": {"collection_name": TARGET,
                                          "alias_name": TARGET + "_alias"}}])
    return rt


def _points(rt: ClusterRouter, name: str = TARGET) -> dict[int, Any]:
    got = rt.read_all(name, "POST", P + "/scroll", {"collection_name": name}, {},
                      {"limit": 10_000, "with_payload": True})
    return {p["id"]: p["payload"] for part in got for p in part["points"]}


def _actors(namespace: str) -> set[str]:
    from ray.util import list_named_actors

    return {a["name"] for a in list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace}


def _wait_dead(actor: Any, timeout: float = 30.0) -> None:
    """Until calls to the actor fail (on a busy machine a killed actor may still answer a
    call or two: this page would then land, and the next one fail)."""
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ping.remote(), timeout=5)
        except RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed replica kept answering")


def _persisted(rt: ClusterRouter) -> dict[str, Any]:
    return ray.get(rt.meta.get.remote())


def test_failure_mid_reshard_leaves_the_target_as_it_was(
        front: Any, target: ClusterRouter, archive: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rt = target
    ns = rt.cfg.namespace
    before = _persisted(rt)
    actors = _actors(ns)
    assert _points(rt) == OLD
    monkeypatch.setattr(cs, "PAGE", 40)  # several pages
    real_apply = cs._apply
    calls: list[dict[str, Any]] = []

    def failing(rt_: Any, name: str, entry: dict[str, Any], bodies: Any, method: str,
                template: str, *rest: Any) -> None:
        if template == P:
            calls.append(entry)
            assert _points(rt) == OLD  # readers see the old points while it fills
            assert _persisted(rt)["hidden"]  # recorded, for a crash to be cleaned up
            assert all(c["name"] == TARGET for c in
                       operations.list_collections(rt, None, "", None)["collections"])
            if len(calls) == 3:  # mid-reshard: a replica of the new collection is lost
                victim = rt.actor_of(entry["shards"]["1"][0])
                ray.kill(victim, no_restart=True)
                _wait_dead(victim)  # ray.kill returns before the actor is gone
        real_apply(rt_, name, entry, bodies, method, template, *rest)

    monkeypatch.setattr(cs, "_apply", failing)
    with pytest.raises(EngineError, match="unchanged"):
        cs.recover_file(rt, front.state.recovery, TARGET, archive, None)
    assert len(calls) == 3
    # the target: same points, config, layout, aliases, replicas; nothing hidden is left
    assert _points(rt) == OLD
    assert aliases.listing(rt) == [{"alias_name": TARGET + "_alias",
                                    "collection_name": TARGET}]
    after = _persisted(rt)
    assert after["collections"] == before["collections"] == rt.state["collections"]
    assert after["hidden"] == {} and after["retired"] == []
    assert _actors(ns) == actors
    hidden_dirs = [r["dir"] for reps in calls[0]["shards"].values() for r in reps]
    assert not any(os.path.exists(d) for d in hidden_dirs)
    assert not [n for n in front.state.catalog.names() if n.startswith(cs.SCRATCH_PREFIX)]


def test_hidden_names_are_refused(front: Any, target: ClusterRouter, archive: str) -> None:
    rt = target
    name = HIDDEN_PREFIX + "x"
    with pytest.raises(BadRequest):
        rt.create(name, {"vectors": {"size": DIM, "distance": "Dot"}},
                  {"collection_name": name}, Q)
    with pytest.raises(BadRequest):
        cs.recover_file(rt, front.state.recovery, name, archive, None)


def test_recovery_swaps_in_whole_and_survives_a_restart(
        front: Any, target: ClusterRouter, archive: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rt = target
    ns = rt.cfg.namespace
    # a config change first (PATCH on every replica): the metadata's create body follows it,
    # so the collection the recovery builds is the collection as it is now
    patch = SimpleNamespace(method="PATCH", path_params={"collection_name": TARGET},
                            query_params={})
    operations.everywhere(rt, patch, C, {"hnsw_config": {"ef_construct": 123}})
    assert _persisted(rt)["collections"][TARGET]["config"]["hnsw_config"]["ef_construct"] \
        == 123
    old_entry = rt.state["collections"][TARGET]
    old_reps = [r for reps in old_entry["shards"].values() for r in reps]
    monkeypatch.setattr(cs, "PAGE", 40)
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:  # counts while it recovers: the old points, then the new, only
        while not stop.is_set():
            try:
                seen.append(len(_points(rt)))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    th = threading.Thread(target=reader)
    th.start()
    try:
        assert cs.recover_file(rt, front.state.recovery, TARGET, archive, None)
    finally:
        stop.set()
        th.join()
    assert not errors, errors
    assert set(seen) <= {len(OLD), len(NEW)}
    assert seen[0] == len(OLD) and seen[-1] == len(NEW)
    assert _points(rt) == NEW
    assert aliases.resolve(rt, TARGET + "_alias") == TARGET
    entry = rt.state["collections"][TARGET]
    assert entry["shard_number"] == 2 and entry["aliases"] == [TARGET + "_alias"]
    info = rt.info(TARGET, {"collection_name": TARGET}, {})
    assert "g" in info["payload_schema"]
    assert info["config"]["hnsw_config"]["ef_construct"] == 123  # the new replicas: as patched
    persisted = _persisted(rt)
    assert persisted["collections"] == rt.state["collections"]
    assert persisted["hidden"] == {} and persisted["retired"] == []
    assert not {r["actor"] for r in old_reps} & _actors(ns)
    assert not any(os.path.exists(r["dir"]) for r in old_reps)

    # a crash mid-recovery leaves a hidden collection: a restarted front end drops it
    hidden, left, _ = rt.create_hidden(TARGET, dict(entry["config"]), Q)
    assert hidden in _persisted(rt)["hidden"]
    assert TARGET in [c["name"] for c in
                      operations.list_collections(rt, None, "", None)["collections"]]
    assert hidden not in rt.state["collections"]
    with pytest.raises(NotFound):
        aliases.update(rt, [{"create_alias": {"collection_name": hidden,
                                              "alias_name": "to_hidden"}}])
    rt.close()
    again = ClusterRouter(front, front.state.settings, all_routes())
    front.state.cluster = again
    assert _persisted(again)["hidden"] == {}
    left_reps = [r for reps in left["shards"].values() for r in reps]
    assert not {r["actor"] for r in left_reps} & _actors(ns)
    assert not any(os.path.exists(r["dir"]) for r in left_reps)
    assert _points(again) == NEW  # the swapped-in collection, found again after the restart
    assert again.configs[TARGET].hnsw_config["ef_construct"] == 123
