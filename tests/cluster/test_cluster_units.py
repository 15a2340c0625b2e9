"""Pieces of api/cluster that need no Ray: the metadata's durable state, placement, id routing,
write splitting and exact merges (against a sort of the union)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from api.cluster import merge
from api.cluster.metadata import ClusterMetadata, metadata_path
from api.cluster.placement import assign, placeable, wants_gpu
from api.cluster.split import shard_of, split_write
from api.settings import load_settings


def test_metadata_survives_a_restart(tmp_path: Path) -> None:
    path = metadata_path(str(tmp_path))
    meta = ClusterMetadata(path)
    ids = meta.new_replica_ids(4)
    entry = {"config": {"vectors": {"size": 2, "distance": "Dot"}}, "shard_number": 2,
             "replication_factor": 2, "write_consistency_factor": 1,
             "shards": {str(s): [{"replica_id": ids[2 * s + r], "node_id": "n", "state": "Active",
                                  "actor": "a", "dir": "d"} for r in range(2)] for s in range(2)}}
    meta.put_collection("c", entry)
    meta.set_state("c", 1, ids[3], "Dead")
    again = ClusterMetadata(path)  # a new actor on the same head-node storage
    assert again.get() == meta.get()
    assert again.get()["collections"]["c"]["shards"]["1"][1]["state"] == "Dead"
    assert again.new_replica_ids(1) == [ids[-1] + 1]
    assert again.drop_collection("c") and ClusterMetadata(path).get()["collections"] == {}


def test_replicas_of_a_shard_on_distinct_nodes() -> None:
    layout = assign(["a", "b", "c"], 4, 2)
    assert all(len(set(reps)) == 2 for reps in layout)
    assert {n for reps in layout for n in reps} == {"a", "b", "c"}


def test_replicas_asking_for_a_gpu_go_to_nodes_with_one() -> None:
    nodes = [{"NodeID": "head", "Resources": {"CPU": 4.0}},
             {"NodeID": "g1", "Resources": {"CPU": 8.0, "GPU": 1.0}},
             {"NodeID": "g2", "Resources": {"CPU": 8.0, "GPU": 2.0}}]
    assert list(placeable(nodes, want_gpu=True)) == ["g1", "g2"]  # never the CPU-only head
    assert list(placeable(nodes, want_gpu=False)) == ["head", "g1", "g2"]
    assert all(len(set(reps)) == 2 for reps in assign(list(placeable(nodes, True)), 3, 2))


def test_a_restarted_replica_goes_home_to_its_host() -> None:
    """After Ray restarts, node ids are new: a replica starts again on a node of the host
    holding its data, not beside its shard's other replica where there is a choice."""
    from api.cluster.router import _home

    a = {"replica_id": 1, "node_id": "old-a", "host": "10.0.0.1"}
    b = {"replica_id": 2, "node_id": "n2", "host": "10.0.0.1"}
    nodes = {"n1": "10.0.0.1", "n2": "10.0.0.1", "n3": "10.0.0.2"}
    assert _home(a, [a, b], nodes) == "n1"  # its host, not n2 (its sibling's)
    assert _home(b, [a, b], nodes) == "n2"  # its recorded node is live
    assert _home({**a, "host": "10.0.0.9"}, [a], nodes) is None  # its host is gone
    assert _home({**a, "host": None}, [a], {"x": "h", "y": "h"}) == "x"  # one host: any node
    assert _home({**a, "host": None}, [a], nodes) is None  # several hosts: unknown


class _Ray:
    def __init__(self, gpus: float) -> None:
        self.gpus = gpus

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 8.0, "GPU": self.gpus} if self.gpus else {"CPU": 8.0}


def test_gpu_per_replica_setting() -> None:
    assert wants_gpu(_Ray(2), "auto") and not wants_gpu(_Ray(0), "auto")
    assert wants_gpu(_Ray(0), True) and not wants_gpu(_Ray(2), False)


def test_shard_of_is_stable_and_spreads() -> None:
    ids = list(range(3000)) + [str(uuid.UUID(int=i * 7919 + 1)) for i in range(300)]
    s = shard_of(ids, 3)
    assert np.array_equal(s, shard_of(ids, 3))
    assert shard_of([0, 1, 2, 2**63], 3).tolist() == shard_of([0, 1, 2, 2**63], 3).tolist()
    counts = np.bincount(s, minlength=3)
    assert counts.min() > 0.8 * len(ids) / 3


def test_split_write_keeps_every_point_once() -> None:
    pts = [{"id": i, "vector": [i, 0]} for i in range(50)]
    parts = split_write("upsert", {"points": pts}, 3)
    assert sorted(p["id"] for b in parts.values() for p in b["points"]) == list(range(50))
    batch = {"batch": {"ids": list(range(10)), "vectors": [[i, 0] for i in range(10)],
                       "payloads": [{"i": i} for i in range(10)]}}
    for b in split_write("upsert", batch, 3).values():
        assert [p["i"] for p in b["batch"]["payloads"]] == b["batch"]["ids"]
        assert [v[0] for v in b["batch"]["vectors"]] == b["batch"]["ids"]
    flt = {"filter": {"must": []}}
    assert split_write("delete", flt, 3) == {0: flt, 1: flt, 2: flt}


def test_merges_equal_a_sort_of_the_union() -> None:
    rng = np.random.default_rng(3)
    pts = [{"id": i, "score": float(s)} for i, s in enumerate(rng.integers(0, 20, 60))]
    shards = [pts[k::3] for k in range(3)]
    want = sorted(pts, key=lambda p: (-p["score"], p["id"]))[5:15]
    per = [sorted(s, key=lambda p: (-p["score"], p["id"]))[:15] for s in shards]
    assert merge.scored(per, 5, 10, ascending=False) == want
    pages = [{"points": sorted(s, key=lambda p: p["id"])[:11]} for s in shards]
    out = merge.scroll(pages, 10)
    assert [p["id"] for p in out["points"]] == list(range(10)) and out["next_page_offset"] == 10
    hits = [{"hits": [{"value": "a", "count": 2}, {"value": "b", "count": 1}]},
            {"hits": [{"value": "b", "count": 3}]}]
    assert merge.facet(hits, 5) == {"hits": [{"value": "b", "count": 4},
                                             {"value": "a", "count": 2}]}


def test_cluster_settings_from_the_environment() -> None:
    s = load_settings(env={"QUIVER__CLUSTER__ENABLED": "true",
                           "QUIVER__CLUSTER__RAY_ADDRESS": "ray://head:10001"})
    assert s.cluster.enabled and s.cluster.ray_address == "ray://head:10001"
    assert not load_settings(env={}).cluster.enabled


class _FakeRay:
    """ray.get over a dict of ref → value (or exception); records each call's timeout."""

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values
        self.calls: list[tuple[object, float]] = []

    def get(self, refs: object, timeout: float) -> object:
        self.calls.append((refs, timeout))
        for ref in refs if isinstance(refs, list) else [refs]:
            if isinstance(self.values[ref], Exception):
                raise self.values[ref]  # type: ignore[misc]
        if isinstance(refs, list):
            return [self.values[r] for r in refs]
        return self.values[refs]


def test_gather_waits_once_and_sorts_out_failures_per_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from api.cluster.router import CALL_TIMEOUT_S, ClusterRouter

    rt = ClusterRouter.__new__(ClusterRouter)
    rt.ray = _FakeRay({"a": 1, "b": 2})
    take = rt._gather(["a", "b"])
    assert (take("a"), take("b")) == (1, 2)
    assert len(rt.ray.calls) == 1  # one joint wait
    gone = RuntimeError("actor gone")
    rt.ray = _FakeRay({"a": 1, "b": gone, "c": 3})
    take = rt._gather(["a", "b", "c"])
    assert take("a") == 1 and take("c") == 3
    try:
        take("b")
        raise AssertionError("the failed call must raise its own error")
    except RuntimeError as exc:
        assert exc is gone
    assert len(rt.ray.calls) == 4
    # after the joint get, each call waits only for what is left of the one deadline: with
    # 100 s gone by the clock, CALL_TIMEOUT_S - 100 each, never a second full wait
    import types

    from api.cluster import router as router_mod

    clock = iter([0.0] + [100.0] * 10)
    fake = types.SimpleNamespace(monotonic=lambda: next(clock))
    monkeypatch.setattr(router_mod, "time", fake)
    rt.ray = _FakeRay({"a": 1, "b": gone})
    take = rt._gather(["a", "b"])
    assert take("a") == 1
    with pytest.raises(RuntimeError):
        take("b")
    assert rt.ray.calls[0][1] == CALL_TIMEOUT_S
    assert [t for _, t in rt.ray.calls[1:]] == [CALL_TIMEOUT_S - 100.0] * 2


def test_scratch_collections_left_by_a_crash_are_dropped(tmp_path: Path) -> None:
    """A cluster recovery stages the archive in the front end's catalog; one cut short by a
    crash leaves it there. Start-up (api/app.py, cluster mode) drops it; nothing else."""
    from api.cluster.collection_snapshots import SCRATCH_PREFIX, drop_scratch
    from engine.catalog import Catalog

    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    body = {"vectors": {"size": 4, "distance": "Dot"}}
    cat.create(f"{SCRATCH_PREFIX}{uuid.uuid4().hex}", body)
    cat.create("kept", body)
    cat.close()
    cat = Catalog(str(tmp_path / "storage"))  # as after the crash: loaded again
    cat.load()
    gone = drop_scratch(cat)
    assert len(gone) == 1 and gone[0].startswith(SCRATCH_PREFIX)
    assert sorted(cat.names()) == ["kept"]
    assert drop_scratch(cat) == []
    cat.close()
