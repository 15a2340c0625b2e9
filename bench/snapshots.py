"""Snapshot create/recover throughput against the disk's own bandwidth, measured in one run.

    .venv/bin/python -m bench.snapshots [--mb 1024] [--dim 256] [--dir PATH]

In-process (engine + snapshot manager, no HTTP): builds a collection of about --mb MiB of
vectors, then times (1) writing the same number of bytes with fsync (the disk's sequential
write bandwidth), (2) snapshot creation, (3) reading the archive back cold-ish and (4)
recovery until the collection answers a query. Prints ratios; writes nothing else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from engine.catalog import Catalog
from engine.query import SearchSpec, search_batch
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery


def disk_write(path: str, nbytes: int) -> float:
    block = np.random.default_rng(0).bytes(8 << 20)
    t = time.perf_counter()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
        f.flush()
        os.fsync(f.fileno())
    dt = time.perf_counter() - t
    os.unlink(path)
    return nbytes / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--dir", default=None, help="where to put storage and snapshots")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="quiver-snapbench-", dir=args.dir)
    try:
        n = args.mb * (1 << 20) // (args.dim * 4)
        cat = Catalog(os.path.join(root, "storage"), wal_fsync=False)
        cat.load()
        coll = cat.create("c", {"vectors": {"size": args.dim, "distance": "Dot"}})
        rng = np.random.default_rng(1)
        print(f"building {n:,} x {args.dim} ({n * args.dim * 4 / 2**20:,.0f} MiB) ...", flush=True)
        step = 50_000
        for s in range(0, n, step):
            m = min(step, n - s)
            coll.upsert({"batch": {"ids": list(range(s, s + m)),
                                   "vectors": rng.random((m, args.dim), dtype=np.float32),
                                   "payloads": [{"i": i} for i in range(s, s + m)]}})
        raw = n * args.dim * 4
        # What the server's background thread does during ingest: hash sealed segments'
        # vectors once (they never change), so a snapshot hashes only the growing segment.
        t = time.perf_counter()
        while coll.digest_sealed():
            pass
        print(f"background hashing of sealed segments: {time.perf_counter() - t:.2f} s "
              "(off the snapshot's path)", flush=True)
        mgr = SnapshotManager(cat, os.path.join(root, "snaps"), 1)
        disk_bw = disk_write(os.path.join(root, "snaps", "probe.bin"), raw)
        t = time.perf_counter()
        info = mgr.create("c")
        create_s = time.perf_counter() - t
        path = mgr.path("c", info.name)
        t = time.perf_counter()
        with open(path, "rb") as f:
            while f.read(8 << 20):
                pass
        read_bw = info.size / (time.perf_counter() - t)
        rec = Recovery(cat, os.path.join(root, "snaps"))
        q = np.ones(args.dim, np.float32)
        t = time.perf_counter()
        rec.recover_file("c2", path, None)
        search_batch(cat.get("c2"), [SearchSpec(q, "", None, 10, 0, None, False, False)])
        recover_s = time.perf_counter() - t
        create_bw = info.size / create_s
        print(f"raw vectors {raw / 2**20:,.0f} MiB, archive {info.size / 2**20:,.0f} MiB "
              f"({info.size / raw:.3f}x raw)")
        print(f"disk write+fsync  {disk_bw / 1e9:6.2f} GB/s")
        print(f"snapshot create   {create_bw / 1e9:6.2f} GB/s  ({create_s:.2f} s) "
              f"= {create_bw / disk_bw:.0%} of disk write  (target >= 80%)")
        print(f"archive read      {read_bw / 1e9:6.2f} GB/s")
        print(f"recover→answering {info.size / recover_s / 1e9:6.2f} GB/s  ({recover_s:.2f} s) "
              f"= {info.size / recover_s / read_bw:.0%} of read bandwidth (target >= 70%)")
        cat.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
