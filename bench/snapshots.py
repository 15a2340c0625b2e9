"""Snapshot create/recover throughput against the disk's own bandwidth, measured in one run.

    .venv/bin/python -m bench.snapshots [--mb 1024] [--dim 256] [--dir PATH]
    .venv/bin/python -m bench.snapshots --bulk [--n 400000] [--dim 768] [--profile OUT.json]
                                       [--rounds 10] [--min-samples 200]
    .venv/bin/python -m bench.snapshots --compare 4 [--n 200000] [--dim 768]

In-process (engine + snapshot manager, no HTTP): builds a collection of about --mb MiB of
vectors, then times (1) writing the same number of bytes with fsync (the disk's sequential
write bandwidth), (2) snapshot creation, (3) reading the archive back cold (its pages dropped
from the page cache first: the disk's read bandwidth) and warm, and (4) recovery until the
collection answers a query, cold and warm, with and without a `checksum` to verify. Prints
ratios; writes nothing else.

`--bulk` is the snapshot-right-after-a-bulk-load scenario, over REST against a real server:
--n points x --dim (400k x 768) uploaded in batches of 500 from two threads, then
`POST /collections/c/snapshots?wait=true` at once (round 0: the headline bandwidth, nothing
else asked of the server). The disk's write+fsync bandwidth is probed before the upload and
right after round 0 (their mean is the peer), and at the end; each probe both buffered + fsync
and with O_DIRECT (the disk itself: in a VM that backs guest memory lazily, buffered writes
into pages not used for a while run ~4x slower than into pages just freed, disk_write_direct). Then a loop of single
`/points/query` requests runs while further creations alternate with idle windows of the same
length, until --min-samples (200) queries overlapped a creation: p99 during vs idle, pooled.
Each creation records the load average and the cores other processes used (bench.sysload).
`--profile OUT` records the server with `py-spy --native` during round 0 (speedscope).
Writes bench/results/<date>-snapshot-bulk-<n/1000>k.json (or --out).

`--compare REPS` isolates the archive writer, in process: the streamed layout (members hashed
before the first byte) vs members-first (archive.write_archive), interleaved with disk probes.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from api.parse.writes import apply_body
from bench import sysload
from engine.catalog import Catalog
from engine.query import SearchSpec, search_batch
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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


def disk_write_direct(path: str, nbytes: int) -> float | None:
    """The disk's own write bandwidth: `nbytes` with O_DIRECT in 8 MiB requests, then fsync
    (bytes/s); None where the file system has no direct I/O. Unlike disk_write it does not
    depend on the page cache: in this sandbox's VM, buffered writes into pages the machine had
    not used for a while ran at 0.33-0.39 GB/s and into pages just freed at 1.1-1.6 GB/s
    (the host backs guest memory lazily and takes free pages back), O_DIRECT at 1.8 GB/s."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o644)
    except OSError:
        return None
    block = mmap.mmap(-1, 8 << 20)  # page-aligned, as O_DIRECT needs
    block.write(np.random.default_rng(0).bytes(8 << 20))
    try:
        t = time.perf_counter()
        off = 0
        while off < nbytes:
            off += os.pwrite(fd, block, off)
        os.fsync(fd)
        dt = time.perf_counter() - t
    finally:
        os.close(fd)
        os.unlink(path)
        block.close()
    return off / dt


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


# ---- the bulk-load scenario (over REST, a real server) ----------------------------------------

BULK_BATCH = 500


def _pct(ns: list[int]) -> dict[str, Any]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    if a.size == 0:
        return {"count": 0}
    return {"count": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def _upload(url: str, name: str, x: np.ndarray, lo: int, hi: int) -> None:
    """Points [lo, hi) in batches of BULK_BATCH, wait=true, orjson bodies (one client)."""
    with httpx.Client(base_url=url, timeout=600) as http:
        for s in range(lo, hi, BULK_BATCH):
            e = min(s + BULK_BATCH, hi)
            body = orjson.dumps({"batch": {"ids": list(range(s, e)), "vectors": x[s:e],
                                           "payloads": [{"i": i} for i in range(s, e)]}},
                                option=orjson.OPT_SERIALIZE_NUMPY)
            r = http.put(f"/collections/{name}/points?wait=true", content=body,
                         headers={"content-type": "application/json"})
            r.raise_for_status()


class SearchLoop:
    """Single queries over REST in a thread, each sample (start ns, latency ns)."""

    def __init__(self, url: str, name: str, dim: int) -> None:
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        rng = np.random.default_rng(7)
        self._bodies = [orjson.dumps({"query": rng.random(dim, dtype=np.float32), "limit": 10},
                                     option=orjson.OPT_SERIALIZE_NUMPY) for _ in range(64)]
        self._url, self._name = url, name
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self._url, timeout=600) as http:
            i = 0
            while not self._stop.is_set():
                t = time.perf_counter_ns()
                http.post(f"/collections/{self._name}/points/query", content=self._bodies[i % 64],
                          headers={"content-type": "application/json"}).raise_for_status()
                self.samples.append((t, time.perf_counter_ns() - t))
                i += 1

    def start(self) -> SearchLoop:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def within(self, a: int, b: int) -> list[int]:
        """Latencies of queries that overlapped [a, b]."""
        return [d for t, d in list(self.samples) if t < b and t + d > a]


def _create(http: httpx.Client, pid: int, profile: str | None) -> dict[str, Any]:
    """POST /collections/c/snapshots?wait=true, timed; the machine's load around it (load
    average; cores used by other processes than this bench and its server: bench.sysload). The archive is
    deleted afterwards (disk space)."""
    spy = None
    if profile:  # py-spy on the server for the creation only
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"),
                                "record", "--native", "--pid", str(pid), "--rate", "200",
                                "--format", "speedscope", "-o", profile],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached
    load_before = os.getloadavg()[0]
    s0 = sysload.snapshot()
    a = time.perf_counter_ns()
    r = http.post("/collections/c/snapshots?wait=true")
    b = time.perf_counter_ns()
    s1 = sysload.snapshot()
    r.raise_for_status()
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    info = r.json()["result"]
    http.delete(f"/collections/c/snapshots/{info['name']}").raise_for_status()
    return {"a": a, "b": b, "create_s": (b - a) / 1e9, "size": int(info["size"]),
            "load1_before": load_before, "load1_after": os.getloadavg()[0],
            **sysload.foreign_load(s0, s1)}


def bulk_scenario(n: int, dim: int, root: str, profile: str | None, rounds: int,
                  min_samples: int) -> dict[str, Any]:
    """400k x 768 (by default) uploaded over REST in batches of 500 from two threads, then
    POST /collections/{c}/snapshots?wait=true at once: round 0, the headline figure, with
    nothing else asked of the server (a search loop's CPU would count against the snapshot).
    The disk's write+fsync bandwidth for the archive's size is probed right before the upload
    and right after round 0 (their mean is round 0's peer), and again at the end.

    Then search latency: one client sends single /points/query requests back to back while
    further creations (rounds 1..) alternate with idle windows of the same length (same
    background work, no snapshot), until at least `min_samples` queries overlapped a creation
    (or `rounds` rounds ran); p99 during creation vs idle, both pooled over the rounds.
    These creations share the CPU with that loop: their bandwidth is reported apart.
    Each disk probe is taken twice: buffered + fsync (disk_write, the historical peer) and
    with O_DIRECT (disk_write_direct: the disk itself, whatever the page cache does)."""
    from bench.server import Server

    snaps = os.path.join(root, "snaps")
    os.makedirs(snaps, exist_ok=True)
    probe = os.path.join(snaps, "probe.bin")
    x = np.random.default_rng(1).random((n, dim), dtype=np.float32)
    env = {"QUIVER__STORAGE__SNAPSHOTS_PATH": snaps}
    out: dict[str, Any] = {"n": n, "dim": dim, "batch": BULK_BATCH, "upload_threads": 2,
                           "load1_start": os.getloadavg()[0]}
    with Server(storage=Path(root) / "storage", env=env) as srv:
        with httpx.Client(base_url=srv.url, timeout=600) as http:
            http.put("/collections/c", json={"vectors": {"size": dim, "distance": "Cosine"}}
                     ).raise_for_status()
            out["disk_write_before_Bps"] = disk_write(probe, x.nbytes)
            out["disk_direct_before_Bps"] = disk_write_direct(probe, x.nbytes)
            t = time.perf_counter()
            half = (n // BULK_BATCH // 2) * BULK_BATCH
            ups = [threading.Thread(target=_upload, args=(srv.url, "c", x, lo, hi))
                   for lo, hi in ((0, half), (half, n))]
            for th in ups:
                th.start()
            for th in ups:
                th.join()
            out["upload_s"] = time.perf_counter() - t
            print(f"uploaded {n:,} x {dim} in {out['upload_s']:.1f} s", flush=True)
            first = _create(http, srv.pid, profile)
            out["disk_write_after_Bps"] = disk_write(probe, first["size"])
            out["disk_direct_after_Bps"] = disk_write_direct(probe, first["size"])
            peer = (out["disk_write_before_Bps"] + out["disk_write_after_Bps"]) / 2
            out.update(archive_bytes=first["size"], create_s=first["create_s"],
                       create_Bps=first["size"] / first["create_s"], disk_write_Bps=peer,
                       create_vs_disk_write=first["size"] / first["create_s"] / peer,
                       round0={k: v for k, v in first.items() if k not in ("a", "b")})
            if out["disk_direct_before_Bps"] and out["disk_direct_after_Bps"]:
                direct = (out["disk_direct_before_Bps"] + out["disk_direct_after_Bps"]) / 2
                out.update(disk_direct_Bps=direct,
                           create_vs_disk_direct=first["size"] / first["create_s"] / direct)
            print(f"round 0: {first['create_s']:.2f} s, load1 {first['load1_before']:.1f}, "
                  f"other processes {first['foreign_cores']:.2f} cores", flush=True)
            loop = SearchLoop(srv.url, "c", dim).start()
            windows: list[tuple[int, int, int]] = []  # (idle start, creation start, end)
            with_loop: list[dict[str, Any]] = []
            for _ in range(rounds):
                idle_a = time.perf_counter_ns()
                time.sleep(max(2.0, with_loop[-1]["create_s"] if with_loop
                               else first["create_s"]))
                r = _create(http, srv.pid, None)
                windows.append((idle_a, r["a"], r["b"]))
                with_loop.append({k: v for k, v in r.items() if k not in ("a", "b")})
                if sum(len(loop.within(a, b)) for _, a, b in windows) >= min_samples:
                    break
            loop.stop()
            out["disk_write_end_Bps"] = disk_write(probe, first["size"])
    during = _pct([d for _, a, b in windows for d in loop.within(a, b)])
    idle = _pct([d for i, a, _ in windows for d in loop.within(i, a)])
    late_peer = (out["disk_write_after_Bps"] + out["disk_write_end_Bps"]) / 2
    out.update(search_rounds=with_loop, search_during=during, search_idle=idle,
               create_with_search_vs_disk_write=float(np.median(
                   [first["size"] / r["create_s"] for r in with_loop])) / late_peer,
               p99_during_vs_idle=(during.get("p99_ms", 0) / idle["p99_ms"]
                                   if idle.get("count") else None))
    return out


def bulk_main(args: argparse.Namespace) -> None:
    root = tempfile.mkdtemp(prefix="quiver-snapbulk-", dir=args.dir)
    try:
        r = bulk_scenario(args.n or 400_000, args.dim or 768, root, args.profile, args.rounds,
                          args.min_samples)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    r.update(command=" ".join(["python -m bench.snapshots"] + sys.argv[1:]),
             when=time.strftime("%Y-%m-%dT%H:%M:%S"), cores=os.cpu_count())
    r0 = r["round0"]
    print(f"archive {r['archive_bytes'] / 2**20:,.0f} MiB in {r['create_s']:.2f} s: "
          f"{r['create_Bps'] / 1e9:.3f} GB/s = {r['create_vs_disk_write']:.2f}x the disk's "
          f"write+fsync {r['disk_write_Bps'] / 1e9:.3f} GB/s (target >= 0.8x); load1 "
          f"{r0['load1_before']:.1f}, other processes {r0['foreign_cores']:.2f} cores")
    if r.get("disk_direct_Bps"):
        print(f"  vs the disk with O_DIRECT {r['disk_direct_Bps'] / 1e9:.3f} GB/s: "
              f"{r['create_vs_disk_direct']:.2f}x")
    d, i = r["search_during"], r["search_idle"]
    if d.get("count") and i.get("count"):
        print(f"with a search loop ({len(r['search_rounds'])} creations, median "
              f"{r['create_with_search_vs_disk_write']:.2f}x the disk): search p99 during "
              f"creation {d['p99_ms']:.1f} ms ({d['count']} queries) vs idle "
              f"{i['p99_ms']:.1f} ms ({i['count']}): {r['p99_during_vs_idle']:.2f}x "
              "(target <= 2x)")
    out = args.out or os.path.join(RESULTS, time.strftime("%Y-%m-%d") +
                                   f"-snapshot-bulk-{r['n'] // 1000}k.json")
    with open(out, "wb") as f:
        f.write(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    print(f"wrote {out}")


def compare_writes(n: int, dim: int, reps: int, root: str) -> dict[str, Any]:
    """In process, interleaved with disk probes of the same size: the streamed layout (every
    member hashed before the first byte, as before issue 16) vs archive.write_archive (members
    first, hashes beside the writes), on one collection whose segments carry no precomputed
    digest (as right after a bulk load, while the indexer is still building HNSW)."""
    from snapshots.archive import HashingWriter, write_archive, write_prepared

    cat = Catalog(os.path.join(root, "storage"), wal_fsync=False)
    cat.load()
    coll = cat.create("c", {"vectors": {"size": dim, "distance": "Cosine"}})
    rng = np.random.default_rng(1)
    for s in range(0, n, 50_000):
        m = min(50_000, n - s)
        apply_body(coll, "upsert", {"batch": {"ids": list(range(s, s + m)),
                               "vectors": rng.random((m, dim), dtype=np.float32),
                               "payloads": [{"i": i} for i in range(s, s + m)]}})
    mgr = SnapshotManager(cat, os.path.join(root, "snaps"), 1)
    dest = os.path.join(root, "a.snapshot")

    def streamed() -> int:
        _, p = mgr._prepare_collection("c", hashed=True)
        with open(dest, "wb") as f:
            hw = HashingWriter(f)
            write_prepared(hw, p)
            hw.hexdigest()
            f.flush()
            os.fsync(f.fileno())
        return p.size

    def member_first() -> int:
        _, p = mgr._prepare_collection("c", hashed=False)
        with open(dest, "wb") as f:
            write_archive(f, p)
        return p.size

    out: dict[str, list[float]] = {"streamed": [], "member_first": [], "disk": []}
    for _ in range(reps):
        for name, fn in (("streamed", streamed), ("member_first", member_first)):
            t = time.perf_counter()
            size = fn()
            out[name].append(size / (time.perf_counter() - t))
            os.unlink(dest)
            out["disk"].append(disk_write(os.path.join(root, "probe.bin"), size))
    cat.close()
    med = {k: float(np.median(v)) for k, v in out.items()}
    return {"n": n, "dim": dim, "reps": reps, "Bps": out, "median_Bps": med,
            "streamed_vs_disk": med["streamed"] / med["disk"],
            "member_first_vs_disk": med["member_first"] / med["disk"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=None, help="256 (in process), 768 (--bulk)")
    ap.add_argument("--dir", default=None, help="where to put storage and snapshots")
    ap.add_argument("--bulk", action="store_true", help="the bulk-load scenario over REST")
    ap.add_argument("--n", type=int, default=None, help="--bulk: points (400000)")
    ap.add_argument("--profile", default=None, help="--bulk: py-spy output during creation")
    ap.add_argument("--out", default=None, help="--bulk: JSON result path")
    ap.add_argument("--rounds", type=int, default=10,
                    help="--bulk: at most this many creations with the search loop")
    ap.add_argument("--min-samples", type=int, default=200,
                    help="--bulk: stop once this many queries overlapped a creation")
    ap.add_argument("--compare", type=int, default=0, metavar="REPS",
                    help="in process: streamed vs member-first archive writes, REPS rounds")
    args = ap.parse_args()
    if args.bulk:
        bulk_main(args)
        return
    if args.compare:
        root = tempfile.mkdtemp(prefix="quiver-snapcmp-", dir=args.dir)
        try:
            r = compare_writes(args.n or 200_000, args.dim or 768, args.compare, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        med = r["median_Bps"]
        print(f"medians: streamed {med['streamed'] / 1e9:.3f} GB/s = "
              f"{r['streamed_vs_disk']:.2f}x, member-first {med['member_first'] / 1e9:.3f} "
              f"GB/s = {r['member_first_vs_disk']:.2f}x the disk's write+fsync "
              f"{med['disk'] / 1e9:.3f} GB/s")
        return
    args.dim = args.dim or 256
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
