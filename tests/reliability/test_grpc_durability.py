"""kill -9 during gRPC writes: every write acknowledged with wait=true over gRPC survives.

As test_durability.py's REST writers, but each writer talks to `service.grpc_port` through
Qdrant's own stubs: it upserts batches of new points, and now and then sets a payload key on
its previous batch or deletes part of it, all with `wait=true`. The server gets SIGKILL at a
random moment mid-writes, is restarted, and then (read over REST and over gRPC):

- every acknowledged upsert is there with exactly the vector and payload sent;
- every acknowledged set_payload is visible, every acknowledged delete stays deleted;
- the one write in flight when the server died (never acknowledged) may have landed or not,
  but all or nothing: its points are excluded only from the checks it could have changed.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import qdrant_client.grpc as pb
from server import QuiverServer

DIM = 8
BATCH = 50


@dataclass
class Ledger:
    """What one writer was told: acknowledged vectors, payloads and deletes."""

    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    payloads: dict[int, dict[str, int]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    uncertain: set[int] = field(default_factory=set)  # touched by the unacknowledged write
    acks: int = 0


def _pid(i: int) -> pb.PointId:
    return pb.PointId(num=i)


def _writer(target: str, ledger: Ledger, stop: threading.Event, start: int) -> None:
    rng = np.random.default_rng(start)
    channel = grpc.insecure_channel(target)
    stub = pb.PointsStub(channel)
    next_id, prev, step = start, [], 0
    try:
        while not stop.is_set():
            step += 1
            op: tuple[str, list[int]]
            if prev and step % 3 == 0:
                op = ("set", prev)
                req: object = pb.SetPayloadPoints(
                    collection_name="crash", wait=True, payload={"v": pb.Value(integer_value=step)},
                    points_selector=pb.PointsSelector(points=pb.PointsIdsList(
                        ids=[_pid(i) for i in prev])))
                call = stub.SetPayload
            elif prev and step % 4 == 0:
                op = ("delete", prev[:5])
                req = pb.DeletePoints(collection_name="crash", wait=True, points=pb.PointsSelector(
                    points=pb.PointsIdsList(ids=[_pid(i) for i in prev[:5]])))
                call = stub.Delete
            else:
                ids = list(range(next_id, next_id + BATCH))
                next_id += BATCH
                vecs = rng.standard_normal((BATCH, DIM)).astype(np.float32)
                op = ("upsert", ids)
                req = pb.UpsertPoints(collection_name="crash", wait=True, points=[
                    pb.PointStruct(id=_pid(i), vectors=pb.Vectors(vector=pb.Vector(
                        dense=pb.DenseVector(data=v.tolist()))),
                        payload={"i": pb.Value(integer_value=i), "v": pb.Value(integer_value=0)})
                    for i, v in zip(ids, vecs, strict=True)])
                call = stub.Upsert
            try:
                res = call(req, timeout=10)
            except grpc.RpcError:
                # the server died mid-call: never acknowledged, may or may not have landed
                if op[0] != "upsert":
                    ledger.uncertain.update(op[1])
                return
            assert res.result.status == pb.UpdateStatus.Completed, res
            ledger.acks += 1
            kind, ids = op
            if kind == "upsert":
                for i, v in zip(ids, vecs, strict=True):
                    ledger.vectors[i] = v
                    ledger.payloads[i] = {"i": i, "v": 0}
                prev = ids
            elif kind == "set":
                for i in ids:
                    if i not in ledger.deleted:
                        ledger.payloads[i]["v"] = step
            else:
                ledger.deleted.update(ids)
                prev = [i for i in prev if i not in ledger.deleted]
    finally:
        channel.close()


def _check(srv: QuiverServer, ledgers: list[Ledger], cycle: int) -> None:
    alive = {i: (v, led.payloads[i]) for led in ledgers for i, v in led.vectors.items()
             if i not in led.deleted and i not in led.uncertain}
    deleted = {i for led in ledgers for i in led.deleted if i not in led.uncertain}
    assert alive, "the writers never got an acknowledgement"
    r = httpx.post(srv.url + "/collections/crash/points", timeout=60,
                   json={"ids": sorted(alive) + sorted(deleted), "with_payload": True,
                         "with_vector": True})
    assert r.status_code == 200, r.text
    got = {p["id"]: p for p in r.json()["result"]}
    missing = set(alive) - set(got)
    assert not missing, f"cycle {cycle}: {len(missing)} acknowledged points lost"
    back = deleted & set(got)
    assert not back, f"cycle {cycle}: {len(back)} acknowledged deletes undone"
    for i, (vec, payload) in alive.items():
        assert got[i]["payload"] == payload, (cycle, i)
        assert np.array_equal(np.asarray(got[i]["vector"], np.float32), vec), (cycle, i)
    # the same over gRPC
    with grpc.insecure_channel(srv.grpc_target) as channel:
        stub = pb.PointsStub(channel)
        sample = sorted(alive)[:: max(1, len(alive) // 200)]
        res = stub.Get(pb.GetPoints(collection_name="crash", ids=[_pid(i) for i in sample],
                                    with_payload=pb.WithPayloadSelector(enable=True),
                                    with_vectors=pb.WithVectorsSelector(enable=True)),
                       timeout=30)
        assert sorted(p.id.num for p in res.result) == sample
        for p in res.result:
            vec, payload = alive[p.id.num]
            assert {k: v.integer_value for k, v in p.payload.items()} == payload
            data = p.vectors.vector.dense.data or p.vectors.vector.data
            assert np.array_equal(np.asarray(data, np.float32), vec)
        count = stub.Count(pb.CountPoints(collection_name="crash", exact=True), timeout=30)
        assert count.result.count >= len(alive)


@pytest.mark.parametrize("wal_mb", ["32", "1"], ids=["wal-only", "flushing"])
def test_kill9_mid_grpc_writes_keeps_every_acknowledged_write(tmp_path: Path,
                                                              wal_mb: str) -> None:
    # wal_mb=1 forces segment flushes while the writers run, so kill -9 also lands mid-flush
    srv = QuiverServer(tmp_path / "storage", grpc=True,
                       env={"QUIVER__STORAGE__FLUSH__WAL_BYTES_MB": wal_mb,
                            "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    rnd = random.Random(int(wal_mb))
    ledgers: list[Ledger] = []
    try:
        httpx.put(srv.url + "/collections/crash", timeout=30,
                  json={"vectors": {"size": DIM, "distance": "Euclid"}}).raise_for_status()
        for cycle in range(3):
            stop = threading.Event()
            fresh = [Ledger(), Ledger()]
            threads = [threading.Thread(target=_writer, args=(
                srv.grpc_target, led, stop, 1_000_000 * (cycle + 1) + 100_000 * t))
                for t, led in enumerate(fresh)]
            for t in threads:
                t.start()
            # every writer has had writes acknowledged (a loaded machine may take a while to
            # connect), then a random while more
            deadline = time.monotonic() + 60
            while not all(led.acks for led in fresh) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rnd.uniform(0.3, 1.0))
            srv.kill9()
            stop.set()
            for t in threads:
                t.join(30)
            assert all(led.acks for led in fresh), [led.acks for led in fresh]
            ledgers.extend(fresh)
            srv.start()
            _check(srv, ledgers, cycle)  # this cycle's writes and every earlier cycle's
        # every kind of write was acknowledged at least once
        assert any(led.deleted for led in ledgers)
        assert any(p["v"] for led in ledgers for p in led.payloads.values())
    finally:
        srv.stop()
