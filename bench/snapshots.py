"""Snapshot create/recover throughput against the disk's own bandwidth, measured in one run.

    .venv/bin/python -m bench.snapshots [--mb 1024] [--dim 256] [--dir PATH]

In-process (engine + snapshot manager, no HTTP): builds a collection of about --mb MiB of
vectors, then times (1) writing the same number of bytes with fsync (the disk's sequential
write bandwidth), (2) snapshot creation, (3) reading the archive back cold (its pages dropped
from the page cache first: the disk's read bandwidth) and warm, and (4) recovery until the
collection answers a query, cold and warm, with and without a `checksum` to verify. Prints
ratios; writes nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import tempfile
import time

import numpy as np

from api.parse.writes import apply_body
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


def drop_cache(path: str) -> None:
    """Evict the file's pages (dirty ones synced first), so the next read comes from the
    disk. Best effort: where fadvise is missing the figure is a warm read."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_cold(path: str) -> float:
    """Sequential read bandwidth of `path` from the disk (bytes/s)."""
    return read_file(path, cold=True)


def read_file(path: str, cold: bool) -> float:
    if cold:
        drop_cache(path)
    size = os.path.getsize(path)
    buf = bytearray(8 << 20)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return size / (time.perf_counter() - t)


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
            apply_body(coll, "upsert", {"batch": {"ids": list(range(s, s + m)),
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
        cold_bw = read_file(path, cold=True)
        warm_bw = read_file(path, cold=False)
        rec = Recovery(cat, os.path.join(root, "snaps"))
        q = np.ones(args.dim, np.float32)

        def recover(cold: bool, checksum: str | None) -> float:
            if cat.exists("c2"):
                cat.delete("c2")
                gc.collect()  # its maps of the archive go, so the pages can be dropped
            if cold:
                drop_cache(path)
            t = time.perf_counter()
            rec.recover_file("c2", path, checksum)
            search_batch(cat.get("c2"), [SearchSpec(q, "", None, 10, 0, None, False, False)])
            return info.size / (time.perf_counter() - t)

        rec_cold = recover(True, None)
        rec_warm = recover(False, None)
        rec_sum = recover(True, info.checksum)
        create_bw = info.size / create_s
        print(f"raw vectors {raw / 2**20:,.0f} MiB, archive {info.size / 2**20:,.0f} MiB "
              f"({info.size / raw:.3f}x raw), {n:,} points x {args.dim}")
        print(f"disk write+fsync  {disk_bw / 1e9:6.2f} GB/s")
        print(f"snapshot create   {create_bw / 1e9:6.2f} GB/s  ({create_s:.2f} s) "
              f"= {create_bw / disk_bw:.0%} of disk write  (target >= 80%)")
        print(f"archive read      {cold_bw / 1e9:6.2f} GB/s cold (the disk), "
              f"{warm_bw / 1e9:.2f} GB/s warm (page cache)")
        print(f"recover→answering {rec_cold / 1e9:6.2f} GB/s cold ({info.size / rec_cold:.2f} s) "
              f"= {rec_cold / cold_bw:.0%} of disk read (target >= 70%)")
        print(f"                  {rec_warm / 1e9:6.2f} GB/s warm ({info.size / rec_warm:.2f} s); "
              f"{rec_sum / 1e9:.2f} GB/s cold with a checksum to verify "
              f"({rec_sum / cold_bw:.0%})")
        cat.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
