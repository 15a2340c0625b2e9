"""The benchmark suite: Quiver against its peers, side by side, in one run.

    .venv/bin/python -m bench              # full (<= 30 min on the 2-core VM)
    .venv/bin/python -m bench --quick      # every section on tiny sizes (<= 2 min)
    .venv/bin/python -m bench --only exact,filtered --out-dir /tmp/b

Sections (each reports figures, or an explicit missing/skipped reason; so does every peer):

1. exact      exact top-10: Quiver in process (engine.query.search_batch, exact) and over HTTP
              vs numpy, faiss IndexFlatIP, qdrant-edge (exact=True), QdrantClient(":memory:")
2. ann        bench.ann (recall@10 vs QPS: Quiver HNSW, hnswlib, faiss HNSW; synthetic and the
              offline LSA embedding set) plus the real Qdrant engine in process (qdrant-edge)
3. filtered   latency and recall vs selectivity (50 %, 10 %, 1 %, 0.1 %) on an indexed integer
              field, Quiver vs qdrant-edge, same data, same filters: a different range window
              on every query (no per-filter mask cache can make the number; its hits are
              reported)
4. ingest     REST upsert throughput, batches of 100 / 1000, 1 and 4 clients, and the time
              until the collection is indexed (green, indexed_vectors_count == points)
5. snapshots  create / recover throughput vs collection size against the disk's sequential
              write / read bandwidth measured in the same run; archive vs raw size; search
              p99 while a snapshot is written vs idle
6. scaling    cost vs N (log-log slope): exact search latency, HNSW build, snapshot create
7. gpu        bench.gpu where a CUDA device exists, else skipped; the latest committed
              device figures side by side, labelled as such

Raw figures go to bench/results/<date>-<host>[-quick].json, the Markdown report with PNG
plots next to it (bench/report.py). Targets are reported, never asserted; the exit status is
0 when the suite ran (sections that broke are listed as missing with the reason).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from api.parse.writes import apply_body
from bench import data, sysload
from bench.foundation import (
    JSON_HEADERS,
    _version,
    check,
    ingest_raw,
    lat_stats,
    machine,
    recall,
    timed_loop,
    versions,
)
from bench.server import ROOT, Server
from bench.snapshots import drop_cache, read_cold

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("exact", "ann", "filtered", "ingest", "snapshots", "scaling", "gpu")
K = 10
M = 16  # HNSW parameters for every engine, as bench.ann
EF_CONSTRUCT = 100
FILTER_EF = 100
FULL_SCAN_KB = 10_000  # Qdrant's default hnsw_config.full_scan_threshold, for both engines
SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)
FILTER_SEED = 4242
CORES = os.cpu_count() or 1
NOISY = 0.10  # foreign cores at which a step is marked NOISY

TARGETS = {
    "ann_vs_hnswlib": 0.8,  # Quiver QPS / hnswlib QPS at recall@10 >= 0.95
    "ann_recall": 0.95,
    "exact_vs_faiss": 1.5,  # Quiver exact time / faiss IndexFlat time
    "ingest_points_per_s": 20_000,
    "snapshot_vs_disk_write": 0.8,
    # bench.snapshots --bulk (own run, not a suite section): 400k x 768 uploaded over REST,
    # snapshot at once; search p99 during creation vs idle
    "snapshot_after_bulk_vs_disk_write": 0.8,
    "snapshot_search_p99_vs_idle": 2.0,
    "filtered_beats_edge_at_or_below": 0.01,  # every query a different filter value
    "ann_single_vs_hnswlib": 0.8,  # bench.ann single-query QPS ratio at recall 0.95
    "ann_batch_vs_hnswlib": 1.0,  # bench.ann batch QPS ratio at recall 0.95
    # bench.overhead: p50 Quiver / p50 bare ASGI app, same uvicorn settings, http.client
    "overhead_healthz_vs_bare": 1.2,
    "overhead_query10_vs_bare": 1.8,
}


# ---- modes --------------------------------------------------------------------------------


@dataclass
class Mode:
    quick: bool
    exact_n: int
    exact_queries: int
    exact_batch: int
    exact_batch_reps: int
    exact_passes: int
    memory_peer_n: int
    memory_peer_queries: int
    ann_argv: list[str]
    filtered_n: int
    filtered_queries: int
    ingest_n: int
    ingest_batches: tuple[int, ...]
    ingest_clients: tuple[int, ...]
    index_wait_s: float
    snap_sizes_mb: tuple[int, ...]
    snap_dim: int
    snap_probe_s: float
    scaling_ns: tuple[int, ...]
    scaling_queries: int
    gpu_argv: list[str]
    wait_quiet_s: float
    notes: list[str] = field(default_factory=list)


def make_mode(quick: bool) -> Mode:
    if quick:
        return Mode(True, exact_n=5_000, exact_queries=60, exact_batch=50, exact_batch_reps=5,
                    exact_passes=1,
                    memory_peer_n=2_000, memory_peer_queries=10,
                    ann_argv=["--quick", "--n", "3000", "--queries", "60", "--wait-quiet", "0"],
                    filtered_n=5_000, filtered_queries=30,
                    ingest_n=4_000, ingest_batches=(100, 1000), ingest_clients=(1, 4),
                    index_wait_s=60, snap_sizes_mb=(4, 16), snap_dim=256, snap_probe_s=0.5,
                    scaling_ns=(1_000, 3_000, 10_000), scaling_queries=20,
                    gpu_argv=["--n", "100000", "--dim", "128", "--batch", "100",
                              "--rehydrate-gb", "0.25"],
                    wait_quiet_s=0)
    return Mode(False, exact_n=100_000, exact_queries=300, exact_batch=100, exact_batch_reps=10,
                exact_passes=2,
                memory_peer_n=20_000, memory_peer_queries=20,
                # 128-d synthetic and 256-d LSA (bench.ann's own full mode is 768-d, ~20 min)
                ann_argv=["--n", "100000", "--dim", "128", "--queries", "500", "--repeats", "2",
                          "--lsa-dim", "256", "--wait-quiet", "0"],
                filtered_n=100_000, filtered_queries=200,
                ingest_n=100_000, ingest_batches=(100, 1000), ingest_clients=(1, 4),
                index_wait_s=600, snap_sizes_mb=(100, 500, 1024, 2048), snap_dim=256,
                snap_probe_s=2.0, scaling_ns=(10_000, 100_000, 1_000_000), scaling_queries=40,
                gpu_argv=[], wait_quiet_s=30)


# ---- progress display ---------------------------------------------------------------------------


class Progress:
    """One line per step with the suite's elapsed time and the step's own duration. On a
    terminal the running step is shown on a live line that the finished one replaces."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log: list[str] = []
        self._live = False

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def live(self, text: str) -> None:
        if self.tty:
            cols = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r\033[K" + text[: cols - 1])
            self.stream.flush()
            self._live = True

    def line(self, text: str) -> None:
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False
        self.stream.write(text + "\n")
        self.stream.flush()
        self.log.append(text)

    def start(self, section: str, what: str) -> None:
        self.live(f"[{self.elapsed():7.1f}s] {section:<9s} {what} ...")

    def end(self, section: str, what: str, seconds: float, result: str,
            error: BaseException | None, load: dict[str, Any] | None) -> None:
        if error is not None:
            result = f"FAILED: {type(error).__name__}: {str(error)[:160]}"
        busy = ""
        if load and load.get("foreign_cores", 0) >= NOISY:
            busy = f"  [NOISY: {load['foreign_cores']:.2f} cores used by others]"
        self.line(f"[{self.elapsed():7.1f}s] {section:<9s} {what}: {result or 'done'} "
                  f"({seconds:.1f}s){busy}")


class _Forward(io.TextIOBase):
    """A stream that appends to a log file and, on a terminal, shows the latest line of a
    nested benchmark's own progress on the live line."""

    def __init__(self, log: Any, progress: Progress, prefix: str) -> None:
        self.logf, self.progress, self.prefix = log, progress, prefix
        self.buf = ""

    def write(self, s: str) -> int:
        self.logf.write(s)
        self.buf += s
        if "\n" in self.buf:
            *done, self.buf = self.buf.split("\n")
            last = next((d for d in reversed(done) if d.strip()), None)
            if last:
                self.progress.live(f"[{self.progress.elapsed():7.1f}s] {self.prefix} | "
                                   f"{last.strip()}")
        return len(s)

    def flush(self) -> None:
        self.logf.flush()


@contextlib.contextmanager
def captured(log_path: Path, progress: Progress, prefix: str) -> Iterator[None]:
    with open(log_path, "a") as log:
        fw = _Forward(log, progress, prefix)
        with contextlib.redirect_stdout(fw), contextlib.redirect_stderr(fw):
            yield


# ---- sections ----------------------------------------------------------------------------------


class Section:
    """Figures, missing peers, notes and per-step machine load of one section."""

    def __init__(self, suite: Suite, name: str) -> None:
        self.suite, self.name = suite, name
        self.figures: dict[str, Any] = {}
        self.missing: dict[str, str] = {}
        self.notes: list[str] = []
        self.load: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    @contextlib.contextmanager
    def step(self, what: str, peer: str | None = None) -> Iterator[dict[str, str]]:
        """Time and display one step. With `peer`, an exception marks that peer missing (with
        the reason) and the section goes on; without, it ends the section."""
        box: dict[str, str] = {"result": ""}
        self.suite.progress.start(self.name, what)
        a = sysload.snapshot()
        t = time.monotonic()
        err: BaseException | None = None
        try:
            yield box
        except Exception as exc:
            err = exc
            if peer is None:
                raise
            self.missing[peer] = f"{type(exc).__name__}: {exc}"
            self.errors[peer] = traceback.format_exc()[-3000:]
        finally:
            load = sysload.foreign_load(a, sysload.snapshot())
            self.load[what] = load
            self.suite.progress.end(self.name, what, time.monotonic() - t, box["result"], err,
                                    load)

    def mark_missing(self, peer: str, why: str) -> None:
        self.missing[peer] = why
        self.suite.progress.line(f"[{self.suite.progress.elapsed():7.1f}s] {self.name:<9s} "
                                 f"{peer}: MISSING — {why}")


def peer_versions() -> dict[str, Any]:
    v = versions()
    for dist in ("hnswlib", "qdrant-edge-py", "matplotlib", "scikit-learn", "scipy", "cupy",
                 "cupy-cuda12x", "torch", "py-spy"):
        v[dist] = _version(dist)
    return v


def stats_ms(ns: list[int]) -> dict[str, Any]:
    st = lat_stats(ns)
    st.pop("samples_ms", None)
    if st.get("count"):
        st["qps"] = 1e3 / st["mean_ms"]
    return st


def topk_np(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-k indices of a (b, n) or (n,) score array, best first."""
    s = np.atleast_2d(scores)
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class Catalogue:
    """Quiver's engine in process: a Catalog on a temp dir (WAL without fsync), CPU path."""

    def __init__(self, prefix: str, base: str | None = None) -> None:
        from engine.catalog import Catalog
        from gpu import xp

        xp.configure("false")
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=base)
        self.cat = Catalog(os.path.join(self.tmp, "storage"), wal_fsync=False)
        self.cat.load()

    def create(self, name: str, body: dict[str, Any]) -> Any:
        return self.cat.create(name, body)

    def close(self) -> None:
        for coll in list(self.cat.collections.values()):
            with contextlib.suppress(Exception):
                coll.close(flush=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def quiver_upsert(coll: Any, x: np.ndarray, start: int = 0,
                  payload: Callable[[int, int], list[dict[str, Any]]] | None = None,
                  step: int = 10_000) -> float:
    t = time.perf_counter()
    for s in range(0, len(x), step):
        e = min(len(x), s + step)
        batch: dict[str, Any] = {"ids": list(range(start + s, start + e)), "vectors": x[s:e]}
        if payload is not None:
            batch["payloads"] = payload(start + s, start + e)
        apply_body(coll, "upsert", {"batch": batch})
    return time.perf_counter() - t


def quiver_spec(q: np.ndarray, exact: bool = False, flt: dict[str, Any] | None = None,
                ef: int | None = None) -> Any:
    from engine.filters import parse_filter
    from engine.query import SearchSpec

    return SearchSpec(vector=q, using="", pred=parse_filter(flt) if flt else None, limit=K,
                      offset=0, score_threshold=None, with_payload=False, with_vector=False,
                      filter_key=orjson.dumps(flt).decode() if flt else "", hnsw_ef=ef,
                      exact=exact)


def ids_of(hits: list[dict[str, Any]]) -> list[int]:
    return [h["id"] for h in hits]


class Edge:
    """The real Qdrant engine in process: a qdrant-edge shard in a temp dir."""

    def __init__(self, dim: int, hnsw: bool = True, indexed_fields: dict[str, str] | None = None
                 ) -> None:
        import qdrant_edge as qe

        self.qe = qe
        self.tmp = tempfile.mkdtemp(prefix="quiver-bench-edge-")
        opt = qe.EdgeOptimizersConfig(indexing_threshold=1 if hnsw else 0,
                                      default_segment_number=1, max_segment_size=1 << 30)
        cfg = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(m=M, ef_construct=EF_CONSTRUCT,
                                           full_scan_threshold=FULL_SCAN_KB),
            optimizers=opt)
        self.shard = qe.EdgeShard.create(os.path.join(self.tmp, "shard"), cfg)
        for fname, kind in (indexed_fields or {}).items():
            schema = {"integer": qe.PayloadSchemaType.Integer,
                      "keyword": qe.PayloadSchemaType.Keyword}[kind]
            self.shard.update(qe.UpdateOperation.create_field_index(fname, schema))
        self.upsert_s = 0.0
        self.optimize_s = 0.0

    @staticmethod
    def version() -> str | None:
        return _version("qdrant-edge-py")

    def upsert(self, x: np.ndarray, payloads: list[dict[str, Any]] | None = None,
               step: int = 1000) -> None:
        qe = self.qe
        t = time.perf_counter()
        for s in range(0, len(x), step):
            e = min(len(x), s + step)
            rows = x[s:e].tolist()
            pts = [qe.Point(s + j, rows[j], payloads[s + j] if payloads else None)
                   for j in range(e - s)]
            self.shard.update(qe.UpdateOperation.upsert_points(pts))
        self.upsert_s = time.perf_counter() - t

    def optimize(self) -> None:
        t = time.perf_counter()
        self.shard.optimize()
        self.optimize_s = time.perf_counter() - t

    def info(self) -> dict[str, int]:
        i = self.shard.info()
        return {"segments": i.segments_count, "points": i.points_count,
                "indexed_vectors": i.indexed_vectors_count}

    def disk_bytes(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.tmp):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(dirpath, f))
        return total

    def request(self, q: np.ndarray, ef: int | None = None, exact: bool = False,
                flt: Any = None) -> Any:
        qe = self.qe
        params = qe.SearchParams(hnsw_ef=ef, exact=exact)
        return qe.QueryRequest(limit=K, query=qe.Query.Nearest(q.tolist()), filter=flt,
                               params=params, with_payload=False, with_vector=False)

    def query(self, q: np.ndarray, ef: int | None = None, exact: bool = False,
              flt: Any = None) -> list[int]:
        return [p.id for p in self.shard.query(self.request(q, ef, exact, flt))]

    def query_batch(self, qs: np.ndarray, ef: int | None = None, exact: bool = False
                    ) -> list[list[int]]:
        req = self.qe.QueryBatchRequest([self.request(v, ef, exact) for v in qs])
        return [[p.id for p in r] for r in self.shard.query_batch(req)]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.shard.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class EdgeAnnEngine:
    """qdrant-edge behind bench.ann's Engine interface (version / build / search_one /
    search_many / close), so bench.ann measures it interleaved with the other engines. Each
    build's own figures (upsert, optimize, segments, disk) are kept in `builds`."""

    name = "qdrant-edge"
    builds: list[dict[str, Any]] = []

    def __init__(self) -> None:
        import qdrant_edge  # noqa: F401 - a missing package is reported by bench.ann

        self.edge: Edge | None = None

    def version(self) -> str | None:
        return Edge.version()

    def build(self, x: np.ndarray) -> None:
        self.edge = Edge(x.shape[1])
        self.edge.upsert(x)
        self.edge.optimize()
        EdgeAnnEngine.builds.append({"n": len(x), "dim": x.shape[1],
                                     "upsert_s": self.edge.upsert_s,
                                     "optimize_s": self.edge.optimize_s,
                                     "disk_bytes": self.edge.disk_bytes(), **self.edge.info()})

    # bench.ann times answer_* (and the freeing of the answer), not ids_*; qdrant-edge's
    # answer is already its ids (its points' ids are read in the timed call)
    def answer_one(self, q: np.ndarray, ef: int) -> list[int]:
        assert self.edge is not None
        return self.edge.query(q, ef)

    def ids_one(self, answer: list[int]) -> np.ndarray:
        return np.array(answer + [-1] * (K - len(answer)), dtype=np.int64)

    def answer_many(self, q: np.ndarray, ef: int) -> list[list[int]]:
        assert self.edge is not None
        return self.edge.query_batch(q, ef)

    def ids_many(self, answer: list[list[int]], m: int) -> np.ndarray:
        out = np.full((m, K), -1, dtype=np.int64)
        for i, ids in enumerate(answer):
            out[i, : len(ids)] = ids
        return out

    def prepare_many(self, q: np.ndarray, ef: int) -> None:
        """Nothing: its requests are built in the timed call."""

    def search_one(self, q: np.ndarray, ef: int) -> np.ndarray:
        return self.ids_one(self.answer_one(q, ef))

    def search_many(self, q: np.ndarray, ef: int) -> np.ndarray:
        return self.ids_many(self.answer_many(q, ef), len(q))

    def close(self) -> None:
        if self.edge is not None:
            self.edge.close()
            self.edge = None


def _at(engines: dict[str, Any], name: str, mode: str) -> dict[str, Any]:
    return ((engines.get(name) or {}).get("at_recall") or {}).get(mode) or {}


def tie_recall(x: np.ndarray, q: np.ndarray, found: np.ndarray, k: int) -> float:
    """Recall@k counting a returned id as a hit when its true score reaches the true k-th
    score (minus 1e-5), as bench.ann does: near-duplicates cannot make recall ambiguous."""
    truth = topk_np(q @ x.T, k)
    kth = np.take_along_axis(q @ x.T, truth[:, -1:], axis=1)
    f = np.asarray(found, dtype=np.int64)[:, :k]
    valid = f >= 0
    sc = np.einsum("qkd,qd->qk", x[np.where(valid, f, 0)], q)
    return float(((sc >= kth - 1e-5) & valid).sum() / (k * len(f)))


def register_edge_in_ann(ann: Any) -> str | None:
    """Add qdrant-edge to bench.ann's engine registry; None when done, else why not."""
    classes = getattr(ann, "ENGINE_CLASSES", None)
    names = getattr(ann, "ALL_ENGINES", None)
    if not isinstance(classes, dict) or not isinstance(names, tuple):
        return "bench.ann has no ENGINE_CLASSES / ALL_ENGINES registry"
    classes.setdefault(EdgeAnnEngine.name, EdgeAnnEngine)
    if EdgeAnnEngine.name not in names:
        ann.ALL_ENGINES = (*names, EdgeAnnEngine.name)
    return None


# ---- the suite ----------------------------------------------------------------------------------


class Suite:
    def __init__(self, mode: Mode, out_json: Path, argv: list[str]) -> None:
        self.mode = mode
        self.out_json = out_json
        self.stem = out_json.with_suffix("")
        self.progress = Progress()
        self.argv = argv
        self.res: dict[str, Any] = {"sections": {}}

    # -- 1. exact --------------------------------------------------------------------------

    def exact(self, s: Section) -> None:
        m = self.mode
        n, nq, bsz = m.exact_n, m.exact_queries, m.exact_batch
        with s.step(f"data: {n:,} x {data.DIM} clustered, ground truth") as box:
            x = data.points(n)
            q = data.queries(max(nq, bsz) + 20)
            r_n = min(50, nq)
            truth = data.exact_topk(x, q[:r_n], K)
            box["result"] = f"{r_n} ground-truth queries"
        qb = q[:bsz]
        engines: dict[str, Any] = {}
        s.figures.update(n=n, dim=data.DIM, k=K, single_queries=nq, batch_size=bsz,
                         batch_reps=m.exact_batch_reps, recall_queries=r_n, engines=engines,
                         distance="Cosine (unit vectors; peers use inner product)")

        def run(label: str, single: Callable[[int], Any], batch: Callable[[np.ndarray], Any],
                box: dict[str, str], count: int = nq, reps: int = m.exact_batch_reps,
                batch_q: np.ndarray = qb, gt: np.ndarray = truth, extra: Any = None,
                passes: int = m.exact_passes) -> None:
            # best of `passes` passes (lowest p50): a burst of foreign load hits one pass
            st: dict[str, Any] = {}
            for _ in range(passes):
                cur = stats_ms(timed_loop(single, count, len(q), warmup=min(10, count)))
                if not st or cur["p50_ms"] < st["p50_ms"]:
                    st = cur
            st["passes"] = passes
            k_r = min(len(gt), count)
            st["recall_at_10"] = recall([list(single(i)) for i in range(k_r)], gt[:k_r])
            batch(batch_q)  # warm-up
            times = []
            for _ in range(reps):
                t = time.perf_counter_ns()
                batch(batch_q)
                times.append(time.perf_counter_ns() - t)
            bt = stats_ms(times)
            bt["qps"] = len(batch_q) / (bt["p50_ms"] / 1e3)
            bt["batch_size"] = len(batch_q)
            engines[label] = {"single": st, "batch": bt, **(extra or {})}
            box["result"] = (f"single p50 {st['p50_ms']:.3f} ms p99 {st['p99_ms']:.3f} ms "
                             f"({st['qps']:,.0f} q/s) | batch {bt['qps']:,.0f} q/s | recall "
                             f"{st['recall_at_10']:.3f}")

        with s.step("numpy X @ q + argpartition", peer="numpy") as box:
            run("numpy", lambda i: topk_np(x @ q[i], K)[0], lambda b: topk_np(b @ x.T, K), box,
                extra={"threads": "numpy BLAS default"})

        with s.step("faiss IndexFlatIP", peer="faiss IndexFlatIP") as box:
            import faiss

            flat = faiss.IndexFlatIP(data.DIM)
            flat.add(x)

            def f_one(i: int) -> Any:
                faiss.omp_set_num_threads(1)
                return flat.search(q[i : i + 1], K)[1][0]

            def f_many(b: np.ndarray) -> Any:
                faiss.omp_set_num_threads(CORES)
                return flat.search(b, K)[1]

            run("faiss IndexFlatIP", f_one, f_many, box,
                extra={"threads": f"1 single, {CORES} batch"})

        with s.step("Quiver in process: search_batch(exact=True)", peer="quiver in-process"
                    ) as box:
            from engine.query import search_batch

            qc = Catalogue("quiver-bench-exact-")
            try:
                coll = qc.create("exact", {"vectors": {"size": data.DIM, "distance": "Cosine"},
                                           "optimizers_config": {"indexing_threshold": 0}})
                ing = quiver_upsert(coll, x)
                run("quiver in-process",
                    lambda i: ids_of(search_batch(coll, [quiver_spec(q[i], exact=True)])[0]),
                    lambda b: search_batch(coll, [quiver_spec(v, exact=True) for v in b]), box,
                    extra={"threads": f"1 below 32 queries, {CORES} above (gpu.flat)",
                           "ingest_s": ing})
            finally:
                qc.close()

        with s.step("Quiver over HTTP: POST /points/query[/batch] exact", peer="quiver HTTP"
                    ) as box:
            import httpx

            with Server() as srv, httpx.Client(base_url=srv.url, timeout=300) as http:
                check(http.put("/collections/exact", content=orjson.dumps({
                    "vectors": {"size": data.DIM, "distance": "Cosine"},
                    "optimizers_config": {"indexing_threshold": 0}}), headers=JSON_HEADERS))
                ing = ingest_raw(http, "exact", x, "batch", "exact.ingest", srv.pid)
                url = "/collections/exact/points/query"

                def h_body(v: np.ndarray) -> dict[str, Any]:
                    return {"query": v, "limit": K, "params": {"exact": True},
                            "with_payload": False}

                def h_one(i: int) -> list[int]:
                    r = http.post(url, content=orjson.dumps(
                        h_body(q[i]), option=orjson.OPT_SERIALIZE_NUMPY), headers=JSON_HEADERS)
                    return [p["id"] for p in check(r)["result"]["points"]]

                def h_many(b: np.ndarray) -> Any:
                    r = http.post(url + "/batch", content=orjson.dumps(
                        {"searches": [h_body(v) for v in b]}, option=orjson.OPT_SERIALIZE_NUMPY),
                        headers=JSON_HEADERS)
                    return check(r)["result"]

                run("quiver HTTP", h_one, h_many, box,
                    extra={"client": "httpx keep-alive + orjson, one client",
                           "ingest_points_per_s": ing["points_per_s"]})

        with s.step("qdrant-edge in process, exact=True", peer="qdrant-edge") as box:
            edge = Edge(data.DIM, hnsw=False)
            try:
                edge.upsert(x)
                edge.optimize()
                run("qdrant-edge", lambda i: edge.query(q[i], exact=True),
                    lambda b: edge.query_batch(b, exact=True), box,
                    extra={"version": edge.version(), **edge.info(),
                           "threads": "edge default search pool"})
            finally:
                edge.close()

        nm = min(m.memory_peer_n, n)
        with s.step(f"QdrantClient(':memory:') on {nm:,} points", peer="QdrantClient(:memory:)"
                    ) as box:
            from qdrant_client import QdrantClient, models

            warnings.filterwarnings("ignore", message="Local mode is not recommended")
            client = QdrantClient(":memory:")
            client.create_collection("exact", vectors_config=models.VectorParams(
                size=data.DIM, distance=models.Distance.COSINE))
            t = time.perf_counter()
            for st_ in range(0, nm, 1000):
                e = min(nm, st_ + 1000)
                client.upsert("exact", points=models.Batch(ids=list(range(st_, e)),
                                                           vectors=x[st_:e].tolist()), wait=True)
            ing_s = time.perf_counter() - t
            gt = truth if nm == n else data.exact_topk(x[:nm], q[:r_n], K)
            nqm = m.memory_peer_queries

            def m_one(i: int) -> list[int]:
                return [p.id for p in client.query_points("exact", query=q[i], limit=K,
                                                          with_payload=False).points]

            def m_many(b: np.ndarray) -> Any:
                return client.query_batch_points("exact", requests=[
                    models.QueryRequest(query=v.tolist(), limit=K) for v in b])

            run("QdrantClient(:memory:)", m_one, m_many, box, count=nqm, reps=2, passes=1,
                batch_q=q[:nqm], gt=gt,
                extra={"points": nm, "ingest_s": ing_s, "version": _version(
                    "qdrant-client"), "note": f"{nm:,} points, {nqm} queries, batch of {nqm}"
                    + ("" if nm == n else " (capped: local mode is slow)")})
            client.close()

        ref = engines.get("faiss IndexFlatIP")
        for label, e in engines.items():
            if ref and label != "faiss IndexFlatIP":
                e["single_p50_vs_faiss"] = e["single"]["p50_ms"] / ref["single"]["p50_ms"]
                e["batch_time_vs_faiss"] = ref["batch"]["qps"] / e["batch"]["qps"]

    # -- 2. ANN ----------------------------------------------------------------------------

    def ann(self, s: Section) -> None:
        from bench import ann

        ann_json = self.stem.parent / f"{self.stem.name}-suite-ann.json"
        argv = [*self.mode.ann_argv, "--out", str(ann_json)]
        why_not = register_edge_in_ann(ann)  # measured in bench.ann's own interleaved loop
        if why_not is None:
            argv += ["--engines", ",".join(ann.ALL_ENGINES)]
        s.figures["command"] = "python -m bench.ann " + " ".join(argv)
        s.figures["qdrant_edge_in_bench_ann"] = why_not is None
        log = self.stem.parent / f"{self.stem.name}-suite-ann.log"
        EdgeAnnEngine.builds = []
        with s.step("bench.ann: Quiver HNSW, hnswlib, faiss HNSW"
                    + (", qdrant-edge" if why_not is None else "")) as box:
            with captured(log, self.progress, "ann      bench.ann"):
                res = ann.main(argv)
            box["result"] = f"{len(res.get('datasets', {}))} data set(s); log {log.name}"
        s.figures["bench_ann"] = {k: res.get(k) for k in ("config", "datasets", "targets",
                                                          "total_s", "notes", "plots")}
        s.figures["bench_ann_json"] = str(ann_json)
        s.figures["bench_ann_md"] = str(ann_json.with_suffix(".md"))
        s.figures["qdrant_edge_builds"] = list(EdgeAnnEngine.builds)
        for name, ds in (res.get("datasets") or {}).items():
            if "engines" not in ds:
                s.mark_missing(f"bench.ann data set {name}", str(ds.get("missing")))
            for ename, why in (ds.get("missing") or {}).items():
                s.mark_missing(f"{ename} on {name}", str(why))
        if why_not is not None:
            s.notes.append(f"qdrant-edge measured after bench.ann, not interleaved: {why_not}")
            self._edge_after_ann(s, ann, argv, res)
        ratios: dict[str, Any] = {}
        s.figures["edge_ratios"] = ratios
        for name, ds in (res.get("datasets") or {}).items():
            engs = dict(ds.get("engines") or {})
            if name in (s.figures.get("qdrant_edge") or {}):
                engs["qdrant-edge"] = s.figures["qdrant_edge"][name]
            for mode in ("single", "batch"):
                e = _at(engs, "qdrant-edge", mode)
                for peer in ("quiver", "hnswlib", "faiss-hnsw"):
                    p = _at(engs, peer, mode)
                    if e.get("reached") and p.get("reached"):
                        ratios.setdefault(name, {})[f"{mode}: {peer} / qdrant-edge"] = (
                            p["interp_qps"] / e["interp_qps"])

    def _edge_after_ann(self, s: Section, ann: Any, argv: list[str], res: dict[str, Any]
                        ) -> None:
        """Fallback when bench.ann cannot take another engine: qdrant-edge on the same data
        sets (bench.ann's loader), ef values and recall definition, measured afterwards."""
        cfg = ann.make_config(argv)
        out: dict[str, Any] = {}
        s.figures["qdrant_edge"] = out
        for name, ds in (res.get("datasets") or {}).items():
            if "engines" not in ds:
                continue
            with s.step(f"qdrant-edge on {name}", peer=f"qdrant-edge on {name}") as box:
                x, q, _ = ann.load_dataset(name, cfg)
                x = np.ascontiguousarray(x, dtype=np.float32)
                q = np.ascontiguousarray(q, dtype=np.float32)
                eng = EdgeAnnEngine()
                er: dict[str, Any] = {"version": eng.version(), "single": [], "batch": []}
                out[name] = er
                try:
                    t = time.perf_counter()
                    eng.build(x)
                    er["build_s"] = time.perf_counter() - t
                    er["index_rss_bytes"] = 0
                    for ef in cfg.efs:
                        for i in range(min(20, len(q))):
                            eng.search_one(q[i], ef)
                        found, st = ann.single_pass(eng, q, ef)
                        er["single"].append({"ef": ef, "recall": tie_recall(x, q, found, K),
                                             "qps": st["qps"], "p50_ms": st["p50_ms"],
                                             "p99_ms": st["p99_ms"]})
                        found, st = ann.batch_pass(eng, q, ef)
                        er["batch"].append({"ef": ef, "recall": tie_recall(x, q, found, K),
                                            "qps": st["qps"], "wall_s": st["wall_s"]})
                    er["at_recall"] = {md: ann.qps_at_recall(er[md], TARGETS["ann_recall"])
                                       for md in ("single", "batch")}
                finally:
                    eng.close()
                box["result"] = f"build {er['build_s']:.1f}s"

    # -- 3. filtered -------------------------------------------------------------------------

    def filtered(self, s: Section) -> None:
        m = self.mode
        n, nq = m.filtered_n, m.filtered_queries
        with s.step(f"data: {n:,} x {data.DIM}, integer payload `r` (a permutation)") as box:
            x = data.points(n)
            q = data.queries(nq + 10)
            r = np.random.default_rng(FILTER_SEED).permutation(n)
            payloads = [{"r": int(v)} for v in r]
            truths: dict[float, tuple[int, Any]] = {}
            starts: dict[float, np.ndarray] = {}  # query i's window: [start, start + thr)
            wrng = np.random.default_rng(FILTER_SEED + 1)
            for sel in SELECTIVITIES:
                thr = max(1, round(sel * n))
                st = starts[sel] = wrng.integers(0, n - thr + 1, nq + 10)
                truths[sel] = (thr, np.concatenate([
                    data.exact_topk(x, q[i : i + 1], min(K, thr),
                                    (r >= st[i]) & (r < st[i] + thr)) for i in range(nq)]))
            truths[1.0] = (n, data.exact_topk(x, q[:nq], K))
            box["result"] = "ground truth per query (its own filter window)"
        s.figures.update(n=n, dim=data.DIM, queries=nq, hnsw_ef=FILTER_EF, m=M,
                         ef_construct=EF_CONSTRUCT, full_scan_threshold_kb=FULL_SCAN_KB,
                         field="r (integer, indexed; values a seeded permutation of 0..n-1)",
                         filter="must: [{key: r, range: {gte: a_i, lt: a_i + selectivity * "
                                "n}}], a_i random per query: every query a different filter",
                         selectivities=list(SELECTIVITIES), engines={})
        runners: dict[str, Callable[[int, dict[str, Any] | None, int], list[int]]] = {}
        cleanup: list[Callable[[], None]] = []
        try:
            with s.step("Quiver in process: ingest, integer index, HNSW build",
                        peer="quiver in-process") as box:
                from engine.query import search_batch

                qc = Catalogue("quiver-bench-filtered-")
                cleanup.append(qc.close)
                coll = qc.create("f", {
                    "vectors": {"size": data.DIM, "distance": "Cosine"},
                    "hnsw_config": {"m": M, "ef_construct": EF_CONSTRUCT,
                                    "full_scan_threshold": FULL_SCAN_KB},
                    "optimizers_config": {"indexing_threshold": 1,
                                          "max_segment_size": n * data.DIM * 4 // 1024 + 1024}})
                coll.create_index("r", "integer")
                ing = quiver_upsert(coll, x, payload=lambda a, b: payloads[a:b])
                t = time.perf_counter()
                while coll.build_pending_index():
                    pass
                build = time.perf_counter() - t
                s.figures["engines"]["quiver"] = {"ingest_s": ing, "build_s": build,
                                                  "indexed": coll.info()["indexed_vectors_count"],
                                                  "by_selectivity": {}}

                def quiver_run(i: int, flt: dict[str, Any] | None, thr: int) -> list[int]:
                    # parsed per query, as a request is (the filter differs every time)
                    return ids_of(search_batch(coll, [quiver_spec(q[i], flt=flt,
                                                                  ef=FILTER_EF)])[0])

                runners["quiver"] = quiver_run
                box["result"] = f"ingest {ing:.1f}s, HNSW build {build:.1f}s"
            with s.step("qdrant-edge in process: ingest, integer index, optimize",
                        peer="qdrant-edge") as box:
                edge = Edge(data.DIM, indexed_fields={"r": "integer"})
                cleanup.append(edge.close)
                edge.upsert(x, payloads)
                edge.optimize()
                qe = edge.qe
                s.figures["engines"]["qdrant-edge"] = {"version": edge.version(),
                                                       "ingest_s": edge.upsert_s,
                                                       "build_s": edge.optimize_s,
                                                       **edge.info(), "by_selectivity": {}}

                def edge_run(i: int, flt: dict[str, Any] | None, thr: int) -> list[int]:
                    if flt is None:
                        return edge.query(q[i], FILTER_EF)
                    rng_ = flt["must"][0]["range"]
                    f = qe.Filter(must=[qe.FieldCondition(key="r", range=qe.RangeFloat(
                        gte=float(rng_["gte"]), lt=float(rng_["lt"])))])
                    return edge.query(q[i], FILTER_EF, flt=f)

                runners["qdrant-edge"] = edge_run
                box["result"] = (f"upsert {edge.upsert_s:.1f}s, optimize (HNSW + payload "
                                 f"index) {edge.optimize_s:.1f}s")
            from engine.tables import STATS as filter_stats

            def window(sel: float, i: int, thr: int) -> dict[str, Any] | None:
                if sel == 1.0:
                    return None
                a = int(starts[sel][i])
                return {"must": [{"key": "r", "range": {"gte": a, "lt": a + thr}}]}

            for sel in (1.0, *SELECTIVITIES):
                thr, gt = truths[sel]
                for ename, fn in runners.items():
                    what = "unfiltered" if sel == 1.0 else f"{sel:.1%} selectivity"
                    with s.step(f"{what} ({thr:,} points): {ename}",
                                peer=f"{ename} at {sel:.1%}") as box:
                        for i in range(10):
                            fn(nq + i, window(sel, nq + i, thr), thr)
                        lat, found = [], []
                        stats0 = dict(filter_stats)
                        for i in range(nq):
                            flt = window(sel, i, thr)
                            t = time.perf_counter_ns()
                            found.append(fn(i, flt, thr))
                            lat.append(time.perf_counter_ns() - t)
                        st = stats_ms(lat)
                        st["recall_at_10"] = recall(found, gt)
                        st["allowed_points"] = thr
                        if ename == "quiver":  # how Quiver answered the filters
                            st["filters"] = {k: filter_stats[k] - stats0[k] for k in stats0}
                        s.figures["engines"][ename]["by_selectivity"][str(sel)] = st
                        box["result"] = (f"p50 {st['p50_ms']:.3f} ms p99 {st['p99_ms']:.3f} ms, "
                                         f"recall {st['recall_at_10']:.3f}")
        finally:
            for fn in cleanup:
                fn()

    # -- 4. ingest --------------------------------------------------------------------------

    def ingest(self, s: Section) -> None:
        import httpx

        m = self.mode
        n = m.ingest_n
        with s.step(f"data: {n:,} x {data.DIM}, pre-serialised bodies per batch size") as box:
            x = data.points(n)
            bodies: dict[int, list[bytes]] = {}
            for b in m.ingest_batches:
                bodies[b] = [orjson.dumps({"batch": {
                    "ids": list(range(st, min(n, st + b))), "vectors": x[st : st + b],
                    "payloads": data.payloads(st, min(n, st + b))}},
                    option=orjson.OPT_SERIALIZE_NUMPY) for st in range(0, n, b)]
            box["result"] = ", ".join(f"batch {b}: {sum(map(len, v)) / 2**20:.0f} MiB JSON"
                                      for b, v in bodies.items())
        runs: list[dict[str, Any]] = []
        s.figures.update(n=n, dim=data.DIM, runs=runs,
                         payload="{'tag': 't{i%10}', 'n': i}", wait="true",
                         client="httpx keep-alive, one thread per client, bodies serialised "
                                "before timing (server throughput, not client JSON speed)",
                         indexing="optimizers_config.indexing_threshold = 1 KB: every batch is "
                                  "indexed by the background indexer while ingest runs")
        configs = [(b, c, 1) for b in m.ingest_batches for c in m.ingest_clients]
        configs.append((max(m.ingest_batches), 1, 0))  # reference: indexing off
        with Server() as srv:
            s.figures["server"] = "quiver serve (QUIVER__GPU__ENABLED=false, WAL fsync on)"
            for batch, clients, thr in configs:
                label = (f"batch {batch}, {clients} client{'s' if clients > 1 else ''}"
                         + ("" if thr else ", indexing off"))
                with s.step(label, peer=f"ingest {label}") as box:
                    name = f"ingest_b{batch}_c{clients}_t{thr}"
                    with httpx.Client(base_url=srv.url, timeout=600) as http:
                        http.delete(f"/collections/{name}")
                        check(http.put(f"/collections/{name}", content=orjson.dumps({
                            "vectors": {"size": data.DIM, "distance": "Cosine"},
                            "optimizers_config": {"indexing_threshold": thr}}),
                            headers=JSON_HEADERS))
                        run = self._ingest_run(srv, name, bodies[batch], clients)
                        run.update(batch=batch, clients=clients, indexing_threshold_kb=thr,
                                   points=n)
                        run["points_per_s"] = n / run["wall_s"]
                        if thr:
                            run.update(self._wait_indexed(http, name, n, m.index_wait_s))
                        info = check(http.get(f"/collections/{name}"))["result"]
                        run["points_count"] = info["points_count"]
                        run["final_status"] = info["status"]
                        http.delete(f"/collections/{name}")
                    runs.append(run)
                    box["result"] = f"{run['points_per_s']:,.0f} points/s" + (
                        f", indexed {run['index_done_after_ingest_s']:.1f}s after the last ack"
                        if run.get("index_done_after_ingest_s") is not None else
                        (" (index wait timed out)" if thr else ""))

    @staticmethod
    def _ingest_run(srv: Server, name: str, bodies: list[bytes], clients: int) -> dict[str, Any]:
        import httpx

        rtts: list[int] = []
        errors: list[str] = []
        lock = threading.Lock()
        go = threading.Barrier(clients + 1)
        url = f"/collections/{name}/points"

        def worker(mine: list[bytes]) -> None:
            local: list[int] = []
            with httpx.Client(base_url=srv.url, timeout=600) as http:
                http.get("/readyz")
                go.wait()
                try:
                    for body in mine:
                        t = time.perf_counter_ns()
                        r = http.put(url, params={"wait": "true"}, content=body,
                                     headers=JSON_HEADERS)
                        local.append(time.perf_counter_ns() - t)
                        if r.status_code != 200:
                            raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
                except Exception as exc:  # noqa: BLE001 - reported by the caller
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
            with lock:
                rtts.extend(local)

        threads = [threading.Thread(target=worker, args=(bodies[i::clients],))
                   for i in range(clients)]
        for th in threads:
            th.start()
        cpu0 = (sysload.proc_cpu_s(), sysload.proc_cpu_s(srv.pid))
        go.wait()
        t = time.perf_counter()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        cpu1 = (sysload.proc_cpu_s(), sysload.proc_cpu_s(srv.pid))
        if errors:
            raise RuntimeError(errors[0])
        return {"wall_s": wall, "batch_rtt": stats_ms(rtts), "requests": len(bodies),
                "client_cpu_per_s": (cpu1[0] - cpu0[0]) / wall,
                "server_cpu_per_s": (cpu1[1] - cpu0[1]) / wall}

    @staticmethod
    def _wait_indexed(http: Any, name: str, n: int, limit_s: float) -> dict[str, Any]:
        t = time.perf_counter()
        polls = 0
        while True:
            info = check(http.get(f"/collections/{name}"))["result"]
            polls += 1
            done = (info["status"] == "green" and info["points_count"] == n
                    and info["indexed_vectors_count"] == info["points_count"])
            waited = time.perf_counter() - t
            if done or waited > limit_s:
                return {"index_done_after_ingest_s": waited if done else None,
                        "index_wait_limit_s": limit_s, "indexed_vectors_count":
                            info["indexed_vectors_count"], "index_polls": polls}
            time.sleep(0.05)

    # -- 5. snapshots ---------------------------------------------------------------------------

    def snapshots(self, s: Section) -> None:
        from bench.snapshots import disk_write
        from engine.query import search_batch
        from snapshots.manager import SnapshotManager
        from snapshots.recovery import Recovery

        m = self.mode
        dim = m.snap_dim
        row = dim * 4
        qc = Catalogue("quiver-bench-snap-", base=self.scratch_dir())
        snaps = os.path.join(qc.tmp, "snaps")
        rows_out: list[dict[str, Any]] = []
        s.figures.update(dim=dim, distance="Dot", payload="{'i': i}", sizes=rows_out,
                         scratch_dir=qc.tmp,
                         method="in process (engine + snapshots.manager + recovery, no HTTP); "
                                "disk probes write/read the same number of bytes on the same "
                                "filesystem (write: fsync at the end; read: page cache dropped "
                                "with posix_fadvise first)")
        try:
            coll = qc.create("snap", {"vectors": {"size": dim, "distance": "Dot"},
                                      "optimizers_config": {"indexing_threshold": 0}})
            mgr = SnapshotManager(qc.cat, snaps, 1)
            rec = Recovery(qc.cat, snaps)
            rng = np.random.default_rng(1)
            have = 0
            q = rng.random(dim, dtype=np.float32)
            for mb in m.snap_sizes_mb:
                target = mb * (1 << 20) // row
                with s.step(f"{mb:,} MiB: grow to {target:,} x {dim}") as box:
                    step = 50_000
                    while have < target:
                        k = min(step, target - have)
                        apply_body(coll, "upsert", {"batch": {
                            "ids": list(range(have, have + k)),
                            "vectors": rng.random((k, dim), dtype=np.float32),
                            "payloads": [{"i": i} for i in range(have, have + k)]}})
                        have += k
                    # what the server's background thread does meanwhile: hash sealed
                    # segments once (they never change), so snapshots hash only what grows
                    while coll.digest_sealed():
                        pass
                    raw = have * row
                    box["result"] = f"{raw / 2**20:,.0f} MiB of vectors"
                if m.snap_sizes_mb.index(mb) == 0:
                    with s.step(f"{mb:,} MiB: search latency idle vs during snapshot creation",
                                peer="search during snapshot") as box:
                        s.figures["search_during_snapshot"] = self._search_under_snapshot(
                            coll, mgr, q, m.snap_probe_s)
                        d = s.figures["search_during_snapshot"]
                        box["result"] = (f"p99 idle {d['idle']['p99_ms']:.2f} ms vs during "
                                         f"{d['during']['p99_ms']:.2f} ms "
                                         f"({d['during']['count']} samples)")
                with s.step(f"{mb:,} MiB: disk write probe, snapshot create, read, recover"
                            ) as box:
                    r: dict[str, Any] = {"size_mb": mb, "points": have, "raw_vector_bytes": raw}
                    gc.collect()
                    r["disk_write_Bps"] = disk_write(os.path.join(snaps, "probe.bin"), raw)
                    t = time.perf_counter()
                    info = mgr.create("snap")
                    r["create_s"] = time.perf_counter() - t
                    path = mgr.path("snap", info.name)
                    r["archive_bytes"] = info.size
                    r["archive_vs_raw_vectors"] = info.size / raw
                    r["create_Bps"] = info.size / r["create_s"]
                    r["create_vs_disk_write"] = r["create_Bps"] / r["disk_write_Bps"]
                    r["archive_read_Bps"] = read_cold(path)
                    r["disk_read_Bps"] = disk_read(os.path.join(snaps, "probe-r.bin"), raw)
                    drop_cache(path)
                    t = time.perf_counter()
                    rec.recover_file("restored", path, None)
                    search_batch(qc.cat.get("restored"), [quiver_spec(q)])
                    r["recover_s"] = time.perf_counter() - t
                    r["recover_Bps"] = info.size / r["recover_s"]
                    r["recover_vs_disk_read"] = r["recover_Bps"] / r["disk_read_Bps"]
                    qc.cat.get("restored").close(flush=False)
                    qc.cat.delete("restored")
                    mgr.delete("snap", info.name)
                    rows_out.append(r)
                    box["result"] = (f"create {r['create_Bps'] / 1e9:.2f} GB/s = "
                                     f"{r['create_vs_disk_write']:.0%} of disk write "
                                     f"{r['disk_write_Bps'] / 1e9:.2f} GB/s; recover "
                                     f"{r['recover_Bps'] / 1e9:.2f} GB/s vs disk read "
                                     f"{r['disk_read_Bps'] / 1e9:.2f} GB/s")
        finally:
            qc.close()

    def scratch_dir(self) -> str | None:
        return os.environ.get("QUIVER_BENCH_SCRATCH") or None

    @staticmethod
    def _search_under_snapshot(coll: Any, mgr: Any, q: np.ndarray, probe_s: float
                               ) -> dict[str, Any]:
        """Single exact queries in a thread on the collection being snapshotted: latencies
        while idle for probe_s, then while snapshots are created (each deleted after) until
        200 samples fell inside creations or 10 creations ran."""
        from engine.query import search_batch

        spec = quiver_spec(q, exact=True)
        samples: list[tuple[int, int]] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                t = time.perf_counter_ns()
                search_batch(coll, [spec])
                samples.append((t, time.perf_counter_ns() - t))

        th = threading.Thread(target=loop, daemon=True)
        th.start()
        while len(samples) < 5 and th.is_alive():  # warm-up: first calls are not "idle"
            time.sleep(0.001)
        t_idle = time.perf_counter_ns()
        time.sleep(probe_s)
        idle_end = time.perf_counter_ns()
        windows: list[tuple[int, int]] = []
        during: list[int] = []
        creates = 0
        try:
            while creates < 10 and len(during) < 200:
                a = time.perf_counter_ns()
                info = mgr.create(coll.name)
                b = time.perf_counter_ns()
                windows.append((a, b))
                mgr.delete(coll.name, info.name)
                creates += 1
                during = [d for (t, d) in list(samples)
                          if any(t < wb and t + d > wa for wa, wb in windows)]
        finally:
            stop.set()
            th.join()
        idle = [d for (t, d) in samples if t >= t_idle and t + d <= idle_end]
        return {"idle": stats_ms(idle), "during": stats_ms(during), "creates": creates,
                "create_ms": [round((b - a) / 1e6, 1) for a, b in windows],
                "query": "exact single query (search_batch) on the collection being "
                         "snapshotted, in a thread of the same process"}

    # -- 6. scaling --------------------------------------------------------------------------

    def scaling(self, s: Section) -> None:
        from engine import ann as qann
        from engine.query import search_batch
        from snapshots.manager import SnapshotManager

        m = self.mode
        ns = sorted(m.scaling_ns)
        with s.step(f"data: {ns[-1]:,} x {data.DIM} (prefixes for smaller N)") as box:
            x = data.points(ns[-1])
            q = data.queries(m.scaling_queries + 5)
            box["result"] = f"{x.nbytes / 2**20:,.0f} MiB"
        points: list[dict[str, Any]] = []
        s.figures.update(dim=data.DIM, ns=ns, points=points, metrics={
            "exact_p50_ms": "Quiver in process, single exact query p50 (search_batch)",
            "exact_min_ms": "the same queries' fastest (least disturbed by other load)",
            "hnsw_build_s": f"engine.ann.HnswIndex.build (faiss HNSW M={M}, "
                            f"ef_construct={EF_CONSTRUCT}, {CORES} threads)",
            "snapshot_create_s": "SnapshotManager.create, archive fsynced"})
        qc = Catalogue("quiver-bench-scaling-", base=self.scratch_dir())
        try:
            coll = qc.create("scale", {"vectors": {"size": data.DIM, "distance": "Cosine"},
                                       "optimizers_config": {"indexing_threshold": 0}})
            mgr = SnapshotManager(qc.cat, os.path.join(qc.tmp, "snaps"), 1)
            have = 0
            for n in ns:
                p: dict[str, Any] = {"n": n}
                points.append(p)
                with s.step(f"N={n:,}: exact search latency", peer=f"exact at {n:,}") as box:
                    quiver_upsert(coll, x[have:n], start=have)
                    have = n
                    st = stats_ms(timed_loop(
                        lambda i: search_batch(coll, [quiver_spec(q[i], exact=True)]),
                        m.scaling_queries, len(q), warmup=3))
                    p["exact_p50_ms"] = st["p50_ms"]
                    p["exact_min_ms"] = st["min_ms"]
                    p["exact"] = st
                    box["result"] = f"p50 {st['p50_ms']:.3f} ms"
                with s.step(f"N={n:,}: snapshot create", peer=f"snapshot at {n:,}") as box:
                    t = time.perf_counter()
                    info = mgr.create("scale")
                    p["snapshot_create_s"] = time.perf_counter() - t
                    p["snapshot_bytes"] = info.size
                    mgr.delete("scale", info.name)
                    box["result"] = f"{p['snapshot_create_s']:.3f} s for {info.size / 2**20:,.0f} MiB"
                with s.step(f"N={n:,}: HNSW build", peer=f"HNSW build at {n:,}") as box:
                    gc.collect()
                    t = time.perf_counter()
                    idx = qann.HnswIndex.build(x[:n], "ip", M, EF_CONSTRUCT)
                    p["hnsw_build_s"] = time.perf_counter() - t
                    del idx
                    gc.collect()
                    box["result"] = f"{p['hnsw_build_s']:.2f} s"
        finally:
            qc.close()
        fits = {}
        for key in ("exact_p50_ms", "exact_min_ms", "hnsw_build_s", "snapshot_create_s"):
            pts = [(p["n"], p[key]) for p in points if p.get(key)]
            fits[key] = loglog_fit(pts)
        s.figures["fits"] = fits

    # -- 7. GPU ------------------------------------------------------------------------------

    def gpu(self, s: Section) -> None:
        from gpu import xp

        committed = committed_gpu_figures()
        s.figures["committed_reference"] = committed
        xp.configure("auto")
        available = xp.device_available()
        reason = xp.backend_name()
        xp.configure("false")
        s.figures["device_probe"] = reason
        if not available:
            s.figures["skipped"] = f"no usable CUDA device here: {reason}"
            self.progress.line(f"[{self.progress.elapsed():7.1f}s] gpu       skipped — {reason}")
            return
        from bench import gpu as bgpu

        argv = list(self.mode.gpu_argv)
        log = self.stem.parent / f"{self.stem.name}-gpu.log"
        with s.step("bench.gpu on this device", peer="bench.gpu") as box:
            with captured(log, self.progress, "gpu      bench.gpu"):
                s.figures["this_run"] = bgpu.main(argv)
            s.figures["command"] = "python -m bench.gpu " + " ".join(argv)
            box["result"] = (f"exact batch {s.figures['this_run']['exact_batch_ms']:.1f} ms, "
                             f"single p50 {s.figures['this_run']['single_query_p50_ms']:.2f} ms")
        xp.configure("false")


# ---- helpers used by sections ------------------------------------------------------------------


def disk_read(path: str, nbytes: int) -> float:
    """Sequential read bandwidth of a freshly written file of nbytes, page cache dropped."""
    block = np.random.default_rng(1).bytes(8 << 20)
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    try:
        return read_cold(path)
    finally:
        os.unlink(path)


def loglog_fit(pts: list[tuple[float, float]]) -> dict[str, Any]:
    """Least-squares slope of log(cost) vs log(N): cost ~ N^slope."""
    if len(pts) < 2:
        return {"slope": None, "why": f"{len(pts)} point(s)"}
    lx = np.log10([p[0] for p in pts])
    ly = np.log10([p[1] for p in pts])
    slope, icpt = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + icpt)
    return {"slope": float(slope), "intercept_log10": float(icpt),
            "max_residual_log10": float(np.abs(resid).max()), "points": len(pts)}


def committed_gpu_figures() -> dict[str, Any]:
    """The newest committed bench/results/*-gpu.json (by its date prefix), labelled."""
    try:
        out = subprocess.run(["git", "ls-files", "bench/results/*gpu*.json"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    committed = bool(out)
    if not out:
        out = [os.path.relpath(p, ROOT) for p in glob.glob(str(RESULTS_DIR / "*gpu*.json"))]
    if not out:
        return {"missing": "no bench/results/*gpu*.json in the repository"}
    path = sorted(out)[-1]
    with open(ROOT / path) as f:
        figs = json.load(f)
    return {"source": path, "committed": committed,
            "label": f"from the committed run {Path(path).stem} (not measured in this run)",
            "figures": figs}


# ---- main ----------------------------------------------------------------------------------------


def load_summary(sections: dict[str, Any]) -> dict[str, Any]:
    steps = [(f"{name}/{step}", v) for name, sec in sections.items()
             for step, v in (sec.get("load") or {}).items()]
    if not steps:
        return {}
    cores = [v["foreign_cores"] for _, v in steps]
    noisy = [k for k, v in steps if v["foreign_cores"] >= NOISY]
    worst = max(steps, key=lambda kv: kv[1]["foreign_cores"])
    return {"steps": len(steps), "noisy_steps": len(noisy), "noisy": noisy,
            "mean_foreign_cores": float(np.mean(cores)), "max_foreign_cores": float(max(cores)),
            "worst_step": worst[0], "worst_top": worst[1].get("top_foreign")}


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="every section on tiny sizes (<= 2 min on 2 cores)")
    ap.add_argument("--out-dir", help="where the JSON, Markdown report and PNGs go "
                                      "(default bench/results)")
    ap.add_argument("--name", help="file stem (default <date>-<host>[-quick])")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--skip", help="comma-separated sections to skip")
    ap.add_argument("--wait-quiet", type=float, metavar="SECONDS",
                    help="wait up to this long for an idle machine first (default 30 full, "
                         "0 quick)")
    args = ap.parse_args(argv)
    argv_list = list(argv if argv is not None else sys.argv[1:])
    mode = make_mode(args.quick)
    only = [v.strip() for v in (args.only or ",".join(SECTIONS)).split(",") if v.strip()]
    skip = {v.strip() for v in (args.skip or "").split(",") if v.strip()}
    bad = (set(only) | skip) - set(SECTIONS)
    if bad:
        ap.error(f"unknown section(s) {sorted(bad)}; choose from {SECTIONS}")
    started = dt.datetime.now(dt.UTC)
    mach = machine()
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"{started:%Y-%m-%d}-{mach['hostname']}{'-quick' if mode.quick else ''}"
    out_json = out_dir / f"{stem}.json"
    suite = Suite(mode, out_json, argv_list)
    res = suite.res
    res.update({"suite": "quiver-bench", "mode": "quick" if mode.quick else "full",
                "command": " ".join(["python -m bench", *argv_list]),
                "started_utc": started.isoformat(), "machine": mach,
                "versions": peer_versions(), "config": asdict(mode), "targets": TARGETS,
                "loadavg_start": loadavg(), "sections": {}})
    p = suite.progress
    p.line(f"[{p.elapsed():7.1f}s] start     {res['mode'].upper()} run on {mach['hostname']}: "
           f"{mach['cpu_model']}, {mach['cpus_usable']} CPUs, "
           f"{(mach['mem_total_bytes'] or 0) / 2**30:.0f} GiB; load average "
           f"{res['loadavg_start']}; sections {', '.join(s for s in only if s not in skip)}")
    wq = args.wait_quiet if args.wait_quiet is not None else mode.wait_quiet_s
    if wq > 0:
        w = sysload.wait_quiet(wq, report=lambda msg: p.live(f"[{p.elapsed():7.1f}s] wait      "
                                                              f"{msg}"))
        res["wait_quiet"] = w
        p.line(f"[{p.elapsed():7.1f}s] wait      machine "
               + ("idle" if w["quiet"] else f"still busy ({w['last']['foreign_cores']:.2f} "
                  "cores used by others): running anyway, figures marked NOISY")
               + f" after {w['waited_s']:.0f}s")
    try:
        for name in SECTIONS:
            sec = Section(suite, name)
            t = time.monotonic()
            la = loadavg()
            if name not in only or name in skip:
                res["sections"][name] = {"status": "skipped", "reason": "not selected (--only/"
                                         "--skip)", "figures": {}, "missing": {}}
                continue
            status, reason = "ok", None
            try:
                getattr(suite, name)(sec)
            except Exception as exc:  # noqa: BLE001 - a broken section is reported, not fatal
                status, reason = "missing", f"{type(exc).__name__}: {exc}"
                sec.errors["section"] = traceback.format_exc()[-4000:]
                p.line(f"[{p.elapsed():7.1f}s] {name:<9s} SECTION FAILED — {reason}")
            if name == "gpu" and "skipped" in sec.figures:
                status, reason = "skipped", sec.figures["skipped"]
            elif status == "ok" and sec.missing:
                status = "partial"
            res["sections"][name] = {"status": status, "reason": reason,
                                     "seconds": time.monotonic() - t, "figures": sec.figures,
                                     "missing": sec.missing, "notes": sec.notes,
                                     "errors": sec.errors, "load": sec.load,
                                     "loadavg": {"start": la, "end": loadavg()}}
    except KeyboardInterrupt:
        res["interrupted"] = True
        p.line(f"[{p.elapsed():7.1f}s] interrupted: writing what was measured")
    res["total_s"] = p.elapsed()
    res["loadavg_end"] = loadavg()
    res["load_summary"] = load_summary(res["sections"])
    res["missing"] = {f"{name}: {peer}": why for name, sec in res["sections"].items()
                      for peer, why in (sec.get("missing") or {}).items()}
    for name, sec in res["sections"].items():
        if sec["status"] in ("missing", "skipped"):
            res["missing"][name] = f"{sec['status']}: {sec['reason']}"
    from bench import report

    try:
        md = report.write(res, out_json)
        res["report"] = str(md)
    except Exception as exc:  # noqa: BLE001 - the raw figures are still written
        res["report_error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
        p.line(f"[{p.elapsed():7.1f}s] report    FAILED — {exc}")
    res["progress_log"] = p.log
    out_json.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                                      default=str))
    p.line(f"[{p.elapsed():7.1f}s] done      {out_json}" + (f"\n{' ' * 20}{res['report']}"
                                                            if "report" in res else ""))
    if "report" in res:
        print(report.summary_table(res))
    return 0
