"""How long a cluster collection snapshot holds writes (its write barrier), and what a writer
sees meanwhile: 2 shards on 2 raylets (ray.cluster_utils.Cluster on this box), N × 128
points, one writer upserting a point at a time (wait=true) through every snapshot.

    .venv/bin/python -m bench.cluster_barrier                  # 20000 points, 3 snapshots
    .venv/bin/python -m bench.cluster_barrier --n 100000 --rounds 3

The barrier is what the front end logs (`cluster snapshot of b: write barrier held … s`,
api/cluster/collection_snapshots.py `_freeze`): the router's write locks are held while each
shard freezes. Per snapshot it prints the creation time, the writes that overlapped it and
their worst latency. Figures only; nothing is asserted. Needs the cluster extra (ray)."""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from bench.server import Server

DIM = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="points (20000)")
    ap.add_argument("--rounds", type=int, default=3, help="snapshots (3)")
    args = ap.parse_args()
    from qdrant_client import QdrantClient, models  # noqa: PLC0415
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    base = Path(tempfile.mkdtemp(prefix="quiver-barrier-"))
    srv = Server(base / "storage", env={
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"),
        "QUIVER__CLUSTER__ENABLED": "true",
        "QUIVER__CLUSTER__RAY_ADDRESS": cluster.address,
        "QUIVER__CLUSTER__NAMESPACE": f"q{uuid.uuid4().hex[:8]}",
        "QUIVER__LOG_LEVEL": "INFO"}).start(timeout=180)
    try:
        c = QdrantClient(url=srv.url, timeout=300)
        c.create_collection("b", shard_number=2, vectors_config=models.VectorParams(
            size=DIM, distance=models.Distance.COSINE))
        rng = np.random.default_rng(0)
        for lo in range(0, args.n, 2000):
            vec = rng.standard_normal((min(2000, args.n - lo), DIM)).astype(np.float32)
            c.upsert("b", models.Batch(ids=list(range(lo, lo + len(vec))), vectors=vec.tolist(),
                                       payloads=[{"g": i % 7} for i in range(lo, lo + len(vec))]),
                     wait=True)
        lat: list[tuple[float, float]] = []  # (start, seconds) of every write
        stop = threading.Event()

        def writer() -> None:
            w = QdrantClient(url=srv.url, timeout=300)
            wrng = np.random.default_rng(1)
            k = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                w.upsert("b", [models.PointStruct(id=10_000_000 + k,
                                                  vector=wrng.standard_normal(DIM).tolist())],
                         wait=True)
                lat.append((t0, time.perf_counter() - t0))
                k += 1

        th = threading.Thread(target=writer)
        th.start()
        time.sleep(1)
        for r in range(args.rounds):
            t0 = time.perf_counter()
            c.create_snapshot("b", wait=True)
            t1 = time.perf_counter()
            during = [d for s, d in lat if t0 <= s + d and s <= t1]
            print(f"snapshot {r}: {t1 - t0:.2f} s; {len(during)} writes overlapped it, the "
                  f"slowest {max(during, default=0):.3f} s")
            time.sleep(1)
        stop.set()
        th.join()
        overall = sorted(d for _, d in lat)
        print(f"write latency overall: median {overall[len(overall) // 2]:.3f} s "
              f"({len(overall)} writes)")
    finally:
        srv.stop()
        cluster.shutdown()
    for line in srv.log_path.read_text(errors="replace").splitlines():
        if "barrier held" in line:
            print(re.sub(r"^.*(cluster snapshot)", r"\1", line))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
