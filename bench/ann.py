"""ANN benchmark: recall@10 vs QPS of Quiver's HNSW search against hnswlib and faiss
IndexHNSWFlat on the same data in the same run, plus exact batch search against faiss.

    .venv/bin/python -m bench.ann                 # full: 100k x 768 synthetic + LSA (~8-12 min)
    .venv/bin/python -m bench.ann --quick         # CI smoke: 20k x 128 synthetic (< 2 min)
    .venv/bin/python -m bench.ann --n 50000 --dim 256 --datasets synthetic

Every engine gets the same vectors (unit norm; Quiver's collection is Cosine, the peers use
inner product), the same HNSW parameters (M=16, ef_construction=100), the same ef values
and the same number of threads: one in single-query mode (one query per call), all cores in
batch mode (all queries in one call). Quiver runs in process: an engine.collection.Collection
searched through engine.query.search_batch, i.e. the code the HTTP route runs, without HTTP.

Targets are reported, never asserted. Raw figures go to
bench/results/<date>-<host>-ann[-quick].json, a Markdown report with tables and PNG plots
next to it. `main(argv)` returns the results dict (for tests).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from api.parse.writes import apply_body
from bench import data
from bench.foundation import machine, versions
from bench.sysload import LoadLog, wait_quiet

RESULTS_DIR = Path(__file__).resolve().parent / "results"
K = 10
M = 16
EF_CONSTRUCTION = 100
EFS_FULL = (16, 32, 64, 128, 256)
EFS_QUICK = (32, 128)
RECALL_TARGET = 0.95
TARGET_HNSW_RATIO = 0.8  # Quiver QPS / hnswlib QPS at recall@10 >= 0.95, single queries
TARGET_BATCH_RATIO = 1.0  # the same for batches (issue 16; bench/suite.py TARGETS)
TARGET_EXACT_RATIO = 1.5  # Quiver exact batch time / faiss IndexFlatIP time
# A batch pass lasts 10-50 ms on 100k points: one scheduling hiccup is a large share of it,
# and more passes cost well under a second (single passes last seconds and keep --repeats)
BATCH_MIN_PASSES = 7
TIE_EPS = 1e-5  # a result scoring within this of the true 10th score counts as a hit
NOISY_CORES = 0.10
CORES = os.cpu_count() or 1

_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


@dataclass
class Config:
    quick: bool
    n: int
    dim: int
    queries: int
    efs: tuple[int, ...]
    datasets: tuple[str, ...]
    engines: tuple[str, ...]
    repeats: int  # passes per (engine, ef, mode); the best pass is reported
    warmup: int
    lsa_dim: int
    wait_quiet_s: float
    out: str | None
    profile_s: float = 0.0
    exact_repeats: int = 2
    notes: list[str] = field(default_factory=list)


ALL_ENGINES = ("quiver", "hnswlib", "faiss-hnsw")
OPTIONAL_ENGINES = ("quiver-default-segments",)  # only when named in --engines


def make_config(argv: list[str] | None) -> Config:
    ap = argparse.ArgumentParser(prog="python -m bench.ann", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: 20k x 128, 200 queries")
    ap.add_argument("--n", type=int, help="points (synthetic; LSA takes up to this many)")
    ap.add_argument("--dim", type=int, help="synthetic dimension")
    ap.add_argument("--queries", type=int, help="held-out queries per data set")
    ap.add_argument("--ef", type=str, help="comma-separated ef values")
    ap.add_argument("--datasets", type=str, help="comma-separated: synthetic,lsa")
    ap.add_argument("--engines", type=str,
                    help=f"comma-separated, from {ALL_ENGINES + OPTIONAL_ENGINES}")
    ap.add_argument("--repeats", type=int, help="timed passes per point (best is kept)")
    ap.add_argument("--lsa-dim", type=int, default=768, help="LSA embedding dimension")
    ap.add_argument("--wait-quiet", type=float, help="seconds to wait for an idle machine")
    ap.add_argument("--out", type=str, help="JSON path (the .md and .png go beside it)")
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="after each data set's curves, sample Quiver's own process with "
                         "py-spy (--native) for SECONDS per mode at the ef reaching recall "
                         f"{RECALL_TARGET}; summaries go into the report")
    a = ap.parse_args(argv)
    if a.quick:
        cfg = Config(True, 20_000, 128, 200, EFS_QUICK, ("synthetic",), ALL_ENGINES, 1, 20,
                     a.lsa_dim, 0.0, a.out, exact_repeats=2)
    else:
        cfg = Config(False, 100_000, 768, 1000, EFS_FULL, ("synthetic", "lsa"), ALL_ENGINES, 3,
                     50, a.lsa_dim, 120.0, a.out)
    if a.n:
        cfg.n = a.n
    if a.dim:
        cfg.dim = a.dim
    if a.queries:
        cfg.queries = a.queries
    if a.ef:
        cfg.efs = tuple(int(v) for v in a.ef.split(","))
    if a.datasets:
        cfg.datasets = tuple(v.strip() for v in a.datasets.split(",") if v.strip())
    if a.engines:
        cfg.engines = tuple(v.strip() for v in a.engines.split(",") if v.strip())
        unknown = set(cfg.engines) - set(ALL_ENGINES) - set(OPTIONAL_ENGINES)
        if unknown:
            raise SystemExit(f"unknown engines {sorted(unknown)}; choose from "
                             f"{ALL_ENGINES + OPTIONAL_ENGINES}")
    if a.repeats:
        cfg.repeats = max(1, a.repeats)
    if a.wait_quiet is not None:
        cfg.wait_quiet_s = a.wait_quiet
    cfg.profile_s = a.profile
    return cfg


# ---- measurement helpers -------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def exact_truth(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth (scores, ids) by exact inner product: faiss IndexFlatIP when available,
    numpy otherwise (both exact; faiss is just faster)."""
    try:
        import faiss  # noqa: PLC0415

        faiss.omp_set_num_threads(CORES)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        s, i = index.search(q, k)
        return s, i
    except ImportError:
        ids = data.exact_topk(x, q, k)
        return np.einsum("qkd,qd->qk", x[ids], q), ids


def recall_at_k(x: np.ndarray, q: np.ndarray, found: np.ndarray, truth_scores: np.ndarray,
                truth_ids: np.ndarray) -> tuple[float, float]:
    """(tie-aware recall, plain id recall) of `found` (m, k) ids, -1 padded.
    Tie-aware (as ann-benchmarks): a returned id counts when its true score is at least the
    true k-th score minus TIE_EPS, so near-duplicate vectors cannot make recall ambiguous."""
    k = truth_ids.shape[1]
    f = np.asarray(found, dtype=np.int64)[:, :k]
    valid = f >= 0
    sc = np.einsum("qkd,qd->qk", x[np.where(valid, f, 0)], q)
    hits = (sc >= truth_scores[:, k - 1 : k] - TIE_EPS) & valid
    tie_recall = float(np.minimum(hits.sum(axis=1), k).sum() / (k * len(f)))
    id_hits = sum(len(set(a[a >= 0].tolist()) & set(b.tolist())) for a, b in zip(f, truth_ids,
                                                                                 strict=True))
    return tie_recall, id_hits / (k * len(f))


def lat_summary(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "max_ms": float(a.max())}


# ---- engines -----------------------------------------------------------------------------------


class Engine:
    name = ""

    def version(self) -> str | None:
        return None

    def build(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def search_one(self, q: np.ndarray, ef: int) -> np.ndarray:
        """One query (d,), one thread → ids (k,)."""
        return self.ids_one(self.answer_one(q, ef))

    def search_many(self, q: np.ndarray, ef: int) -> np.ndarray:
        """All queries (m, d) in one call, all cores → ids (m, k)."""
        return self.ids_many(self.answer_many(q, ef), len(q))

    # The timed part is the engine's answer in its own form (hnswlib's label matrix,
    # Quiver's records) and the freeing of it; reading the ids out of it for recall is
    # the harness's work and is not timed (single_pass, batch_pass).
    def answer_one(self, q: np.ndarray, ef: int) -> Any:
        raise NotImplementedError

    def answer_many(self, q: np.ndarray, ef: int) -> Any:
        raise NotImplementedError

    def ids_one(self, answer: Any) -> np.ndarray:
        return answer

    def ids_many(self, answer: Any, m: int) -> np.ndarray:
        return answer

    def prepare_many(self, q: np.ndarray, ef: int) -> None:
        """Build search_many's arguments for (q, ef) before the clock starts: the peers get
        their query matrix as it is; Quiver's batch call takes one SearchSpec per query."""

    def close(self) -> None:
        pass


class HnswlibEngine(Engine):
    name = "hnswlib"

    def __init__(self) -> None:
        import hnswlib  # noqa: PLC0415

        self.mod = hnswlib
        self.index: Any = None

    def version(self) -> str | None:
        return _dist_version("hnswlib")

    def build(self, x: np.ndarray) -> None:
        self.index = self.mod.Index(space="ip", dim=x.shape[1])
        self.index.init_index(max_elements=len(x), M=M, ef_construction=EF_CONSTRUCTION,
                              random_seed=100)
        self.index.add_items(x, np.arange(len(x)), num_threads=CORES)

    def answer_one(self, q: np.ndarray, ef: int) -> np.ndarray:
        self.index.set_ef(ef)
        labels, _ = self.index.knn_query(q[None, :], k=K, num_threads=1)
        return labels[0]

    def answer_many(self, q: np.ndarray, ef: int) -> np.ndarray:
        self.index.set_ef(ef)
        labels, _ = self.index.knn_query(q, k=K, num_threads=CORES)
        return labels

    def close(self) -> None:
        self.index = None


class FaissHnswEngine(Engine):
    name = "faiss-hnsw"

    def __init__(self) -> None:
        import faiss  # noqa: PLC0415

        self.faiss = faiss
        self.index: Any = None
        self.params: dict[int, Any] = {}

    def version(self) -> str | None:
        return getattr(self.faiss, "__version__", None) or _dist_version("faiss-cpu")

    def build(self, x: np.ndarray) -> None:
        f = self.faiss
        self.index = f.IndexHNSWFlat(x.shape[1], M, f.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        f.omp_set_num_threads(CORES)
        self.index.add(x)

    def _params(self, ef: int) -> Any:
        p = self.params.get(ef)
        if p is None:
            p = self.params[ef] = self.faiss.SearchParametersHNSW()
            p.efSearch = ef
        return p

    def answer_one(self, q: np.ndarray, ef: int) -> np.ndarray:
        self.faiss.omp_set_num_threads(1)  # per calling thread; Quiver sets it too
        _, ids = self.index.search(q[None, :], K, params=self._params(ef))
        return ids[0]

    def answer_many(self, q: np.ndarray, ef: int) -> np.ndarray:
        self.faiss.omp_set_num_threads(CORES)
        _, ids = self.index.search(q, K, params=self._params(ef))
        return ids

    def close(self) -> None:
        self.index = None


class QuiverEngine(Engine):
    """Quiver's engine in process: a Collection (no WAL fsync) in a temporary directory,
    one segment (max_segment_size raised so 100k x 768 is not split), indexed through
    build_pending_index, searched through engine.query.search_batch."""

    name = "quiver"

    def __init__(self) -> None:
        from engine import ann as ann_mod  # noqa: PLC0415
        from engine import query  # noqa: PLC0415
        from engine.collection import Collection  # noqa: PLC0415
        from gpu import xp  # noqa: PLC0415

        xp.configure("false")  # the CPU path is measured (main() restores the backend)
        if not ann_mod.available():
            raise RuntimeError("engine.ann reports faiss unavailable: no HNSW in Quiver")
        self.Collection = Collection
        self.query = query
        self.coll: Any = None
        self.tmp: str | None = None
        self.ingest_s = 0.0
        self.ingest_rss = 0
        self.segments = 0
        self.walk = "faiss"
        self._prepared: tuple[np.ndarray, int, list[Any]] | None = None

    def version(self) -> str | None:
        return _dist_version("quiver")

    def body(self, dim: int, n: int) -> dict[str, Any]:
        seg_kb = (n * dim * 4) // 1024 + 1024
        return {"vectors": {"size": dim, "distance": "Cosine"},
                "hnsw_config": {"m": M, "ef_construct": EF_CONSTRUCTION},
                "optimizers_config": {"indexing_threshold": 1, "max_segment_size": seg_kb}}

    def ingest(self, x: np.ndarray) -> None:
        """Create the collection and upsert x (ids 0..n-1) in batches; untimed by build()."""
        self.tmp = tempfile.mkdtemp(prefix="quiver-ann-")
        self.coll = self.Collection.create("ann", os.path.join(self.tmp, "ann"),
                                           self.body(x.shape[1], len(x)), wal_fsync=False)
        r0 = settled_rss()
        t = time.perf_counter()
        step = 10_000
        for s in range(0, len(x), step):
            e = min(len(x), s + step)
            apply_body(self.coll, "upsert", {"batch": {"ids": list(range(s, e)), "vectors": x[s:e]}})
        self.ingest_s = time.perf_counter() - t
        self.ingest_rss = settled_rss() - r0

    def build(self, x: np.ndarray) -> None:
        if self.coll is None:
            self.ingest(x)
        while self.coll.build_pending_index():
            pass
        info = self.coll.info()
        self.segments = sum(1 for s in self.coll.segments if s.n)
        walkers = [getattr(ix, "walker", None) for s in self.coll.segments
                   for ix in s.ann.values()]
        self.walk = ("engine/_hnsw_walk.c" if walkers and all(w is not None for w in walkers)
                     else "faiss")
        if info["indexed_vectors_count"] != len(x):
            raise RuntimeError(f"Quiver indexed {info['indexed_vectors_count']} of {len(x)} "
                               "vectors")

    def _spec(self, q: np.ndarray, ef: int, exact: bool = False) -> Any:
        return self.query.SearchSpec(vector=q, using="", pred=None, limit=K, offset=0,
                                     score_threshold=None, with_payload=False,
                                     with_vector=False, hnsw_ef=ef, exact=exact)

    def answer_one(self, q: np.ndarray, ef: int) -> list[dict[str, Any]]:
        return self.query.search_batch(self.coll, [self._spec(q, ef)])[0]

    def ids_one(self, answer: list[dict[str, Any]]) -> np.ndarray:
        return np.array([r["id"] for r in answer] + [-1] * (K - len(answer)), dtype=np.int64)

    def prepare_many(self, q: np.ndarray, ef: int) -> None:
        self._prepared = (q, ef, [self._spec(v, ef) for v in q])

    def answer_many(self, q: np.ndarray, ef: int, exact: bool = False
                    ) -> list[list[dict[str, Any]]]:
        prep = self._prepared
        if prep is not None and prep[0] is q and prep[1] == ef and not exact:
            specs = prep[2]
        else:
            specs = [self._spec(v, ef, exact) for v in q]
        return self.query.search_batch(self.coll, specs)

    def search_many(self, q: np.ndarray, ef: int, exact: bool = False) -> np.ndarray:
        return self.ids_many(self.answer_many(q, ef, exact), len(q))

    def ids_many(self, answer: list[list[dict[str, Any]]], m: int) -> np.ndarray:
        flat = [p["id"] for r in answer for p in r]
        if len(flat) == m * K:  # every query found K: one conversion
            return np.array(flat, dtype=np.int64).reshape(m, K)
        out = np.full((m, K), -1, dtype=np.int64)
        for i, r in enumerate(answer):
            ids = [p["id"] for p in r]
            out[i, : len(ids)] = ids
        return out

    def close(self) -> None:
        if self.coll is not None:
            self.coll.close(flush=False)
            self.coll = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class QuiverDefaultSegmentsEngine(QuiverEngine):
    """Quiver with the default segment cap (256 MB of vectors): 100k x 768 becomes two
    segments, each with its own HNSW graph, searched one after the other and merged."""

    name = "quiver-default-segments"

    def body(self, dim: int, n: int) -> dict[str, Any]:
        b = super().body(dim, n)
        del b["optimizers_config"]["max_segment_size"]
        return b


ENGINE_CLASSES: dict[str, Callable[[], Engine]] = {
    "quiver": QuiverEngine, "hnswlib": HnswlibEngine, "faiss-hnsw": FaissHnswEngine,
    "quiver-default-segments": QuiverDefaultSegmentsEngine}


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- data sets ---------------------------------------------------------------------------------


def load_dataset(name: str, cfg: Config) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    if name == "synthetic":
        t = time.perf_counter()
        x = data.points(cfg.n, cfg.dim)
        q = data.queries(cfg.queries, cfg.dim)
        return x, q, {"kind": "synthetic", "n": cfg.n, "dim": cfg.dim,
                      "queries": len(q),
                      "description": f"bench.data clustered Gaussian ({data.N_CLUSTERS} "
                                     f"centres, spread {data.SPREAD}), seed {data.DATA_SEED}, "
                                     "unit norm; queries from a separate stream",
                      "make_s": round(time.perf_counter() - t, 2)}
    if name == "lsa":
        from bench import lsa  # noqa: PLC0415

        x, q, info = lsa.embeddings(cfg.n, cfg.queries, cfg.lsa_dim,
                                    lambda m: progress(f"lsa: {m}"))
        info.update(kind="lsa", n=len(x), dim=x.shape[1], queries=len(q),
                    description=f"LSA ({x.shape[1]}-d) of {len(x)} docstring passages from "
                                "the stdlib and site-packages; held-out passages as queries")
        return x, q, info
    raise ValueError(f"unknown data set {name!r}")


# ---- the measurements --------------------------------------------------------------------------


def single_pass(eng: Engine, q: np.ndarray, ef: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Every query once, one per call; per-call latencies. Timed: each call and the freeing
    of its answer; not timed: reading the ids out of it (Engine.ids_one)."""
    found = np.empty((len(q), K), dtype=np.int64)
    gc.collect()
    lat = []
    harness_ns = 0
    c_harness = 0.0
    c0 = time.thread_time()
    t0 = time.perf_counter_ns()
    for i in range(len(q)):
        t = time.perf_counter_ns()
        answer = eng.answer_one(q[i], ef)
        t1 = time.perf_counter_ns()
        c1 = time.thread_time()
        found[i] = eng.ids_one(answer)
        c_harness += time.thread_time() - c1
        t2 = time.perf_counter_ns()
        del answer
        lat.append(t1 - t + time.perf_counter_ns() - t2)
        harness_ns += t2 - t1
    wall = (time.perf_counter_ns() - t0 - harness_ns) / 1e9
    # every engine runs single queries in the calling thread
    cpu = time.thread_time() - c0 - c_harness
    return found, {"qps": len(q) / wall, "wall_s": wall, "cpu_s": cpu,
                   "cpu_qps": len(q) / max(cpu, 1e-9), **lat_summary(lat)}


def batch_pass(eng: Engine, q: np.ndarray, ef: int) -> tuple[np.ndarray, dict[str, Any]]:
    """All queries in one call (its arguments built before the clock starts). Timed: the
    call and the freeing of its answer; not timed: reading the ids out of it."""
    eng.prepare_many(q, ef)
    gc.collect()
    t = time.perf_counter()
    answer = eng.answer_many(q, ef)
    t1 = time.perf_counter()
    found = eng.ids_many(answer, len(q))
    t2 = time.perf_counter()
    del answer  # found shares nothing with a records answer: freed here, timed
    wall = t1 - t + time.perf_counter() - t2
    return found, {"qps": len(q) / wall, "wall_s": wall}


def qps_at_recall(points: list[dict[str, Any]], target: float, key: str = "qps"
                  ) -> dict[str, Any]:
    """The QPS at recall `target` on one engine's curve (points sorted by ef): the first point
    reaching it, and the QPS linearly interpolated between the two points around it."""
    pts = sorted(points, key=lambda p: p["ef"])
    first = next((p for p in pts if p["recall"] >= target), None)
    if first is None:
        best = max((p["recall"] for p in pts), default=None)
        return {"reached": False, "max_recall": best}
    i = pts.index(first)
    interp = first[key]
    if i > 0 and pts[i - 1]["recall"] < target:
        lo = pts[i - 1]
        span = first["recall"] - lo["recall"]
        w = (target - lo["recall"]) / span if span > 0 else 1.0
        interp = lo[key] + w * (first[key] - lo[key])
    return {"reached": True, "first_ef": first["ef"], "first_recall": first["recall"],
            "first_qps": first[key], "interp_qps": interp}


def run_dataset(name: str, cfg: Config, load: LoadLog, res: dict[str, Any]) -> None:
    progress(f"{name}: loading data")
    try:
        x, q, info = load_dataset(name, cfg)
    except Exception as exc:  # noqa: BLE001 - e.g. scikit-learn missing: report, go on
        res["datasets"][name] = {"missing": f"{type(exc).__name__}: {exc}"}
        progress(f"{name}: MISSING ({exc})")
        return
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    ds: dict[str, Any] = {"info": info, "engines": {}, "missing": {}}
    res["datasets"][name] = ds
    progress(f"{name}: {len(x)} x {x.shape[1]}, {len(q)} queries; ground truth")
    t = time.perf_counter()
    ts, ti = exact_truth(x, q, K)
    ds["ground_truth_s"] = round(time.perf_counter() - t, 3)

    engines: dict[str, Engine] = {}
    for ename in cfg.engines:
        try:
            eng = ENGINE_CLASSES[ename]()
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported
            ds["missing"][ename] = f"{type(exc).__name__}: {exc}"
            progress(f"{name}: {ename} MISSING ({exc})")
            continue
        er: dict[str, Any] = {"version": eng.version(), "single": [], "batch": []}
        try:
            if isinstance(eng, QuiverEngine):
                progress(f"{name}: quiver: ingest {len(x)} points")
                eng.ingest(x)
                er["ingest_s"] = eng.ingest_s
                er["ingest_rss_bytes"] = eng.ingest_rss
            progress(f"{name}: {ename}: building HNSW (M={M}, ef_construction="
                     f"{EF_CONSTRUCTION}, {CORES} threads)")
            r0 = settled_rss()
            with load.measure(f"{name}/{ename}/build"):
                t = time.perf_counter()
                eng.build(x)
                er["build_s"] = time.perf_counter() - t
            er["index_rss_bytes"] = settled_rss() - r0
            if isinstance(eng, QuiverEngine):
                er["segments"] = eng.segments
                er["walk"] = eng.walk
            progress(f"{name}: {ename}: built in {er['build_s']:.1f}s, index RSS "
                     f"+{er['index_rss_bytes'] / 2**20:.0f} MiB")
        except Exception as exc:  # noqa: BLE001
            ds["missing"][ename] = f"build failed: {type(exc).__name__}: {exc}"
            progress(f"{name}: {ename} build FAILED: {traceback.format_exc()}")
            eng.close()
            continue
        engines[ename] = eng
        ds["engines"][ename] = er

    # ef outer, then mode, then pass, then engine: a burst of foreign load hits all engines
    # alike, and the best pass of each engine is kept
    passes = {"single": single_pass, "batch": batch_pass}
    for ef in cfg.efs:
        best: dict[tuple[str, str], dict[str, Any]] = {}
        for mode, fn in passes.items():
            for ename, eng in engines.items():
                try:  # warm-up: first calls at a new ef, caches, thread pools
                    if mode == "single":
                        for i in range(min(cfg.warmup, len(q))):
                            eng.search_one(q[i], ef)
                    else:
                        eng.search_many(q[: min(len(q), 64)], ef)
                except Exception as exc:  # noqa: BLE001
                    ds["engines"][ename].setdefault("errors", []).append(
                        f"ef={ef} {mode} warm-up: {type(exc).__name__}: {exc}")
            for rep in range(cfg.repeats if mode == "single" else
                             max(cfg.repeats, BATCH_MIN_PASSES)):
                for ename, eng in engines.items():
                    key = f"{name}/{ename}/{mode}/ef{ef}/pass{rep}"
                    try:
                        with load.measure(key):
                            found, st = fn(eng, q, ef)
                    except Exception as exc:  # noqa: BLE001
                        ds["engines"][ename].setdefault("errors", []).append(
                            f"ef={ef} {mode}: {type(exc).__name__}: {exc}")
                        progress(f"{name}: {ename} ef={ef} {mode} FAILED: "
                                 f"{traceback.format_exc()}")
                        continue
                    st["foreign_cores"] = load.sections[key]["foreign_cores"]
                    cur = best.get((ename, mode))
                    if cur is None or st["qps"] > cur["qps"]:
                        rec, rec_ids = recall_at_k(x, q, found, ts, ti)
                        best[(ename, mode)] = {"ef": ef, "recall": rec, "recall_ids": rec_ids,
                                               **st, "passes": rep + 1}
                    else:
                        cur["passes"] = rep + 1
        for ename in engines:
            er = ds["engines"][ename]
            for mode in passes:
                if (ename, mode) in best:
                    er[mode].append(best[(ename, mode)])
            st, bt = best.get((ename, "single")), best.get((ename, "batch"))
            if st and bt:
                progress(f"{name}: ef={ef:<4d} {ename:<11s} recall {st['recall']:.4f} | single "
                         f"{st['qps']:8.0f} q/s p50 {st['p50_ms']:.3f} ms p99 "
                         f"{st['p99_ms']:.3f} ms | batch {bt['qps']:8.0f} q/s "
                         f"(recall {bt['recall']:.4f})")

    for ename in list(engines):
        er = ds["engines"][ename]
        er["at_recall"] = {mode: qps_at_recall(er[mode], RECALL_TARGET)
                           for mode in ("single", "batch")}
        if er["single"] and "cpu_qps" in er["single"][0]:
            er["at_recall"]["single_cpu"] = qps_at_recall(er["single"], RECALL_TARGET,
                                                          "cpu_qps")
    ds["ratios"] = hnsw_ratios(ds)

    quiver = engines.get("quiver")
    if cfg.profile_s > 0 and isinstance(quiver, QuiverEngine):
        ds["profile"] = profile_quiver(name, quiver, q, ds["engines"]["quiver"], cfg)
    ds["exact"] = exact_section(name, x, q, ts, ti, quiver, cfg, load)
    for eng in engines.values():
        eng.close()
    engines.clear()
    gc.collect()


def hnsw_ratios(ds: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    e = ds["engines"]
    if "quiver" not in e:
        return out
    for peer in ("hnswlib", "faiss-hnsw"):
        if peer not in e:
            continue
        for mode in ("single", "batch", "single_cpu"):
            if mode not in e["quiver"]["at_recall"] or mode not in e[peer]["at_recall"]:
                continue
            a, b = e["quiver"]["at_recall"][mode], e[peer]["at_recall"][mode]
            if a.get("reached") and b.get("reached"):
                out[f"{mode}_vs_{peer}"] = {
                    "interp": a["interp_qps"] / b["interp_qps"],
                    "first_point": a["first_qps"] / b["first_qps"]}
            else:
                out[f"{mode}_vs_{peer}"] = {"interp": None, "first_point": None,
                                            "why": "recall target not reached"}
    return out


_FRAME_RE = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+?)(?::(?P<line>\d+))?\)$")
QUIVER_CODE = ("engine/", "gpu/", "api/")


def _frame(f: str) -> tuple[str, str, str | None]:
    """'func (file:line)' → (func, file, line); native frames have no line."""
    m = _FRAME_RE.match(f)
    if not m:
        return f, "", None
    return m["func"], m["file"], m["line"]


def attribute_samples(raw: str, top: int = 20) -> dict[str, Any]:
    """Where the searching thread's time goes, from py-spy raw (collapsed) stacks.

    Each sample is charged to one owner: the outermost faiss frame under it when the stack is
    inside faiss (the C++ search and its SWIG wrapper: "faiss: <entry>"), else the innermost
    Quiver frame (engine/, gpu/, api/) as "file:function" (with the numpy and interpreter
    work it called), else the benchmark harness or other. Only the busiest thread counts."""
    stacks: dict[str, list[tuple[list[str], int]]] = {}
    for line in open(raw):
        line = line.rstrip()
        if not line:
            continue
        stack, _, cnt = line.rpartition(" ")
        frames = stack.split(";")
        stacks.setdefault(frames[0], []).append((frames[1:], int(cnt)))
    if not stacks:
        return {"samples": 0}
    thread = max(stacks, key=lambda t: sum(c for _, c in stacks[t]))
    owners: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, cnt in stacks[thread]:
        total += cnt
        parsed = [_frame(f) for f in frames]
        seen = set()
        for func, file, _ in parsed:
            if file.startswith(QUIVER_CODE):
                key = f"{file}:{func}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += cnt
        fz = next((i for i, (_, file, _) in enumerate(parsed)
                   if file.startswith("faiss/") or "libfaiss" in file), None)
        if fz is not None:
            owners[f"faiss: {parsed[fz][0]} ({parsed[fz][1]})"] += cnt
            continue
        q = next((i for i in range(len(parsed) - 1, -1, -1)
                  if parsed[i][1].startswith(QUIVER_CODE)), None)
        if q is not None:
            func, file, ln = parsed[q]
            owners[f"{file}:{func}"] += cnt
            lines[f"{file}:{ln} ({func})"] += cnt
        elif any(file.startswith("bench/") for _, file, _ in parsed):
            owners["benchmark harness (bench/ann.py: loop, result ids)"] += cnt
        else:
            owners["other"] += cnt
    return {"thread": thread, "samples": total,
            "owners": [(k, v / total) for k, v in owners.most_common(top)],
            "quiver_lines": [(k, v / total) for k, v in lines.most_common(top)],
            "inclusive": [(k, v / total) for k, v in inclusive.most_common(top)]}


def format_attribution(a: dict[str, Any]) -> str:
    if not a.get("samples"):
        return "(no samples)"
    out = [f"{a['samples']} samples of the searching thread; each charged to one owner "
           "(faiss call, else innermost Quiver function incl. the numpy it calls):"]
    out += [f"  {share:6.1%}  {k}" for k, share in a["owners"]]
    out += ["", "Quiver lines (self, excluding faiss):"]
    out += [f"  {share:6.1%}  {k}" for k, share in a["quiver_lines"][:15]]
    out += ["", "Quiver functions, inclusive:"]
    out += [f"  {share:6.1%}  {k}" for k, share in a["inclusive"][:15]]
    return "\n".join(out)


def profile_quiver(name: str, eng: QuiverEngine, q: np.ndarray, er: dict[str, Any],
                   cfg: Config) -> dict[str, Any]:
    """py-spy (raw collapsed stacks, --native so faiss's C++ frames show) of this process
    while Quiver alone answers queries, per mode, at the ef reaching the recall target."""
    from bench.profile import _tool, summarise_pyspy  # noqa: PLC0415

    pyspy = _tool("py-spy")
    if not pyspy:
        return {"missing": "py-spy not found (pip install py-spy)"}
    out: dict[str, Any] = {}
    prof_dir = RESULTS_DIR / "profiles"
    prof_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}"
    for mode in ("single", "batch"):
        a = er["at_recall"][mode]
        ef = a["first_ef"] if a.get("reached") else max(cfg.efs)
        raw = prof_dir / f"{stamp}-ann-{name}-quiver-{mode}-ef{ef}.txt"
        proc = subprocess.Popen([pyspy, "record", "--pid", str(os.getpid()), "--format", "raw",
                                 "-o", str(raw), "--rate", "200", "--native",
                                 "--duration", str(int(cfg.profile_s + 60))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(2.0)
        t_end = time.monotonic() + cfg.profile_s
        count = 0
        t0 = time.perf_counter()
        while time.monotonic() < t_end:
            if mode == "single":
                for i in range(len(q)):
                    eng.search_one(q[i], ef)
                count += len(q)
            else:
                eng.search_many(q, ef)
                count += len(q)
        wall = time.perf_counter() - t0
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        entry: dict[str, Any] = {"ef": ef, "queries": count, "qps_while_sampled": count / wall,
                                 "raw": str(raw)}
        if raw.exists():
            entry["attribution"] = attribute_samples(str(raw))
            entry["summary"] = format_attribution(entry["attribution"])
            entry["pyspy_summary"] = summarise_pyspy(str(raw), top=30)
            progress(f"{name}: profile quiver {mode} ef={ef}: {count / wall:.0f} q/s while "
                     f"sampled; {raw}")
        else:
            entry["missing"] = f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"
            progress(f"{name}: profile quiver {mode} FAILED: {entry['missing']}")
        out[mode] = entry
    return out


def exact_section(name: str, x: np.ndarray, q: np.ndarray, ts: np.ndarray, ti: np.ndarray,
                  quiver: QuiverEngine | None, cfg: Config, load: LoadLog) -> dict[str, Any]:
    """Exact top-10 for the whole query batch: gpu.flat.search (CPU path) vs faiss
    IndexFlatIP.search, and Quiver's engine path search_batch(exact=True)."""
    out: dict[str, Any] = {"queries": len(q), "n": len(x), "dim": x.shape[1], "missing": {}}
    runs: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    try:
        import faiss  # noqa: PLC0415

        flat_index = faiss.IndexFlatIP(x.shape[1])
        flat_index.add(x)

        def faiss_flat(qs: np.ndarray) -> np.ndarray:
            faiss.omp_set_num_threads(CORES)
            return flat_index.search(qs, K)[1]

        runs["faiss IndexFlatIP.search"] = faiss_flat
        out["faiss_version"] = getattr(faiss, "__version__", None)
    except ImportError as exc:
        out["missing"]["faiss IndexFlatIP.search"] = f"ImportError: {exc}"
    try:
        from gpu import flat  # noqa: PLC0415

        runs["quiver gpu.flat.search"] = lambda qs: flat.search(x, qs, K, "ip")[1]
    except Exception as exc:  # noqa: BLE001
        out["missing"]["quiver gpu.flat.search"] = f"{type(exc).__name__}: {exc}"
    if quiver is not None:
        runs["quiver search_batch(exact=True)"] = lambda qs: quiver.search_many(qs, 0,
                                                                                exact=True)
    else:
        out["missing"]["quiver search_batch(exact=True)"] = "Quiver engine did not build"
    for label, fn in list(runs.items()):
        try:
            fn(q[:64])  # warm-up (first-call costs), and a check that it runs at all
        except Exception as exc:  # noqa: BLE001
            out["missing"][label] = f"{type(exc).__name__}: {exc}"
            progress(f"{name}: exact {label} FAILED: {traceback.format_exc()}")
            del runs[label]
    for rep in range(cfg.exact_repeats):  # interleaved, best of exact_repeats per method
        for label, fn in runs.items():
            key = f"{name}/exact/{label}/pass{rep}"
            gc.collect()
            with load.measure(key):
                t = time.perf_counter()
                found = fn(q)
                wall = time.perf_counter() - t
            cur = out.get(label)
            if cur is None or wall < cur["wall_s"]:
                rec, _ = recall_at_k(x, q, found, ts, ti)
                out[label] = {"wall_s": wall, "qps": len(q) / wall, "recall": rec,
                              "foreign_cores": load.sections[key]["foreign_cores"]}
    for label in runs:
        r = out[label]
        progress(f"{name}: exact {label:<34s} {r['wall_s'] * 1e3:9.1f} ms for {len(q)} "
                 f"queries (recall {r['recall']:.4f})")
    ref = out.get("faiss IndexFlatIP.search")
    for label in ("faiss IndexFlatIP.search", "quiver gpu.flat.search",
                  "quiver search_batch(exact=True)"):
        if ref and label in out and isinstance(out[label], dict):
            out[label]["time_vs_faiss"] = out[label]["wall_s"] / ref["wall_s"]
    return out


# ---- report --------------------------------------------------------------------------------


def _fmt(v: Any, spec: str = ".0f", none: str = "—") -> str:
    return none if v is None else format(v, spec)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def tables(res: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, ds in res["datasets"].items():
        if "missing" in ds and "engines" not in ds:
            lines += [f"### {name}: MISSING — {ds['missing']}", ""]
            continue
        info = ds["info"]
        lines += [f"### {name}: {info['n']} x {info['dim']}, {info['queries']} held-out queries",
                  "", info["description"], ""]
        for ename, why in ds["missing"].items():
            lines.append(f"* **{ename}: missing** — {why}")
        if ds["missing"]:
            lines.append("")
        lines += ["| engine | version | build s | index RSS MiB | notes |",
                  "|---|---|---:|---:|---|"]
        for ename, er in ds["engines"].items():
            note = ""
            if ename.startswith("quiver"):
                note = (f"ingest {er.get('ingest_s', 0):.1f} s (+{er.get('ingest_rss_bytes', 0)/2**20:.0f}"
                        f" MiB segment vectors), {er.get('segments')} segment(s), walk: "
                        f"{er.get('walk', '?')}")
            lines.append(f"| {ename} | {er['version']} | {er['build_s']:.1f} | "
                         f"{er['index_rss_bytes'] / 2**20:.0f} | {note} |")
        lines.append("")
        for mode, title in (("single", "single-query (1 query per call, 1 thread)"),
                            ("batch", f"batch (all queries in one call, {CORES} threads)")):
            lines += [f"**{title}**", ""]
            if mode == "single":
                lines += ["| ef | engine | recall@10 | QPS | QPS per CPU-second | p50 ms | "
                          "p99 ms | foreign cores |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
            else:
                lines += ["| ef | engine | recall@10 | QPS | wall ms | foreign cores |",
                          "|---:|---|---:|---:|---:|---:|"]
            efs = sorted({p["ef"] for er in ds["engines"].values() for p in er[mode]})
            for ef in efs:
                for ename, er in ds["engines"].items():
                    p = next((p for p in er[mode] if p["ef"] == ef), None)
                    if p is None:
                        continue
                    noisy = " (NOISY)" if p["foreign_cores"] >= NOISY_CORES else ""
                    if mode == "single":
                        lines.append(f"| {ef} | {ename} | {p['recall']:.4f} | {p['qps']:.0f} | "
                                     f"{p.get('cpu_qps', 0):.0f} | "
                                     f"{p['p50_ms']:.3f} | {p['p99_ms']:.3f} | "
                                     f"{p['foreign_cores']:.2f}{noisy} |")
                    else:
                        lines.append(f"| {ef} | {ename} | {p['recall']:.4f} | {p['qps']:.0f} | "
                                     f"{p['wall_s'] * 1e3:.1f} | {p['foreign_cores']:.2f}{noisy} |")
            lines.append("")
        lines += [f"**QPS at recall@10 ≥ {RECALL_TARGET}** (first ef reaching it; and "
                  "interpolated linearly between the two ef points around it)", "",
                  "| engine | mode | first ef | recall there | QPS there | QPS interpolated |",
                  "|---|---|---:|---:|---:|---:|"]
        for ename, er in ds["engines"].items():
            for mode in ("single", "batch", "single_cpu"):
                a = er["at_recall"].get(mode)
                if a is None:
                    continue
                if a.get("reached"):
                    lines.append(f"| {ename} | {mode} | {a['first_ef']} | "
                                 f"{a['first_recall']:.4f} | {a['first_qps']:.0f} | "
                                 f"{a['interp_qps']:.0f} |")
                else:
                    lines.append(f"| {ename} | {mode} | not reached (max recall "
                                 f"{_fmt(a.get('max_recall'), '.4f')}) | | | |")
        lines.append("")
        if ds.get("ratios"):
            lines += [f"| Quiver / peer QPS at recall ≥ {RECALL_TARGET} | interpolated | "
                      f"first point | target (vs hnswlib): ≥ {TARGET_HNSW_RATIO}× single, "
                      f"≥ {TARGET_BATCH_RATIO}× batch |",
                      "|---|---:|---:|---|"]
            for key, r in ds["ratios"].items():
                verdict = ""
                if key.endswith("hnswlib"):
                    want = TARGET_BATCH_RATIO if key.startswith("batch") else TARGET_HNSW_RATIO
                    verdict = _verdict(None if r["interp"] is None else r["interp"] >= want)
                lines.append(f"| {key.replace('_vs_', ' vs ')} | {_fmt(r['interp'], '.2f')}× | "
                             f"{_fmt(r['first_point'], '.2f')}× | {verdict} |")
            lines.append("")
        ex = ds.get("exact")
        if ex:
            lines += [f"**Exact batch search**: {ex['queries']} queries x {ex['n']} x "
                      f"{ex['dim']}, top-{K}, {CORES} threads", "",
                      f"| method | wall ms | QPS | recall@10 | time vs faiss | target ≤ "
                      f"{TARGET_EXACT_RATIO}× |", "|---|---:|---:|---:|---:|---|"]
            for label in ("faiss IndexFlatIP.search", "quiver gpu.flat.search",
                          "quiver search_batch(exact=True)"):
                r = ex.get(label)
                if isinstance(r, dict):
                    ratio = r.get("time_vs_faiss")
                    verdict = (_verdict(ratio <= TARGET_EXACT_RATIO)
                               if ratio is not None and label == "quiver gpu.flat.search"
                               else "")
                    lines.append(f"| {label} | {r['wall_s'] * 1e3:.1f} | {r['qps']:.0f} | "
                                 f"{r['recall']:.4f} | {_fmt(ratio, '.2f')}× | {verdict} |")
            for label, why in ex.get("missing", {}).items():
                lines.append(f"| {label} | missing: {why} | | | | |")
            lines.append("")
    return "\n".join(lines)


def plots(res: dict[str, Any], stem: Path) -> dict[str, Any]:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001
        return {"missing": f"matplotlib unavailable ({type(exc).__name__}: {exc})"}
    files = {}
    for name, ds in res["datasets"].items():
        if not ds.get("engines"):
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        for ax, mode, title in ((axes[0], "single", "single query, 1 thread"),
                                (axes[1], "batch", f"batch, {CORES} threads")):
            for ename, er in ds["engines"].items():
                pts = sorted(er[mode], key=lambda p: p["ef"])
                if not pts:
                    continue
                ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker="o",
                        label=ename)
                for p in pts:
                    ax.annotate(str(p["ef"]), (p["recall"], p["qps"]), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))
            ax.axvline(RECALL_TARGET, color="grey", linestyle=":", linewidth=1)
            ax.set_yscale("log")
            ax.set_xlabel("recall@10")
            ax.set_ylabel("queries per second")
            ax.set_title(f"{name} {ds['info']['n']}x{ds['info']['dim']}: {title}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = stem.parent / f"{stem.name}-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files[name] = str(path)
    return {"files": files}


def write_report(res: dict[str, Any], json_path: Path) -> Path:
    stem = json_path.with_suffix("")
    res["plots"] = plots(res, stem)
    md = json_path.with_suffix(".md")
    m = res["machine"]
    v = res["versions"]
    lines = [f"# ANN benchmark — {res['started']} — {m['hostname']}", "",
             f"Command: `{res['command']}`  ", f"Mode: {'QUICK' if res['config']['quick'] else 'FULL'}"
             f", total {res['total_s']:.0f} s", "",
             f"Machine: {m['cpu_model']}, {m['cpus_usable']} usable CPUs, "
             f"{(m['mem_total_bytes'] or 0) / 2**30:.0f} GiB; {m['platform']}", "",
             "Versions: " + ", ".join(f"{k} {v[k]}" for k in (
                 "python", "numpy", "faiss", "hnswlib", "scikit-learn", "matplotlib",
                 "quiver", "quiver_git") if k in v), "",
             f"HNSW: M={M}, ef_construction={EF_CONSTRUCTION} for every engine; k={K}; "
             f"recall@10 is tie-aware (a hit scores ≥ the true 10th score − {TIE_EPS}); plain "
             "id recall is in the JSON (`recall_ids`). Single-query mode: one query per call "
             "and one thread for every engine (Quiver: `search_batch(coll, [spec])`, which "
             "walks the graph in the calling thread for < 8 queries: engine/_hnsw_walk.c "
             "where it is built, else faiss); batch mode: all queries in one "
             f"call, {CORES} threads for every engine (Quiver's per-query SearchSpecs are built "
             "before the clock starts, as the peers' query matrix is). Timed in both modes: "
             "each engine's answer in its own form (Quiver's records, the peers' label "
             "matrices) and the freeing of it, not the harness reading ids out of it. "
             "QPS is the best of "
             f"{res['config']['repeats']} single pass(es) and of "
             f"{max(res['config']['repeats'], BATCH_MIN_PASSES)} batch passes; 'foreign cores' is the CPU other processes "
             f"used meanwhile (≥ {NOISY_CORES} marked NOISY). 'QPS per CPU-second' "
             "(single_cpu) divides by the calling thread's CPU time instead of wall time: "
             "every engine answers a single query in the calling thread, so this figure is "
             "robust to other processes taking the CPU (not to their cache pressure).", "",
             f"Quiver runs in process (no HTTP): a Collection with hnsw_config m={M}, "
             f"ef_construct={EF_CONSTRUCTION}, optimizers_config.indexing_threshold=1 KB and "
             "max_segment_size raised so all points are in one segment (the default 256 MB "
             "segment cap would split 100k x 768 in two), indexed by build_pending_index "
             "(faiss HNSW, all cores, plus writing the graph file), searched via "
             "engine.query.search_batch with with_payload=false.", ""]
    if res.get("quiet"):
        lines += [f"Idle wait before start: {res['quiet']}", ""]
    for note in res.get("notes", []):
        lines += [f"* {note}"]
    lines += ["", "## Results", "", tables(res)]
    for name, ds in res["datasets"].items():
        prof = ds.get("profile") if isinstance(ds, dict) else None
        if not prof:
            continue
        lines += [f"## Profile of Quiver ({name})", ""]
        if "missing" in prof:
            lines += [f"No profile: {prof['missing']}", ""]
            continue
        for mode, p in prof.items():
            lines += [f"### {mode}, ef={p['ef']}: {p['qps_while_sampled']:.0f} q/s while "
                      f"sampled (py-spy --native, 200 Hz; raw stacks: `{p['raw']}`)", ""]
            lines += ["```", p.get("summary") or p.get("missing", ""), "```", ""]
    pl = res["plots"]
    lines += ["## Plots", ""]
    if "missing" in pl:
        lines += [f"No plots: {pl['missing']}", ""]
    for name, f in pl.get("files", {}).items():
        lines += [f"![{name}]({Path(f).name})", ""]
    md.write_text("\n".join(lines) + "\n")
    return md


# ---- main ----------------------------------------------------------------------------------


def peer_versions() -> dict[str, Any]:
    v = versions()
    for dist in ("hnswlib", "scikit-learn", "matplotlib", "scipy"):
        v[dist] = _dist_version(dist)
    return v


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = make_config(argv)
    t_start = time.monotonic()
    started = dt.datetime.now(dt.UTC)
    m = machine()
    res: dict[str, Any] = {
        "benchmark": "ann", "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.ann " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": asdict(cfg), "machine": m, "versions": peer_versions(), "datasets": {},
        "targets": {"hnsw_ratio_vs_hnswlib": TARGET_HNSW_RATIO,
                    "batch_ratio_vs_hnswlib": TARGET_BATCH_RATIO, "recall": RECALL_TARGET,
                    "exact_time_vs_faiss": TARGET_EXACT_RATIO},
        "notes": []}
    progress(f"{'QUICK' if cfg.quick else 'FULL'} run on {m['hostname']} ({CORES} CPUs): "
             f"datasets {cfg.datasets}, engines {cfg.engines}, ef {cfg.efs}")
    if cfg.wait_quiet_s > 0:
        res["quiet"] = wait_quiet(cfg.wait_quiet_s, report=progress)
        if not res["quiet"]["quiet"]:
            res["notes"].append("the machine was not idle at start: "
                                f"{res['quiet']['last']['foreign_cores']} cores used by others")
    load = LoadLog()
    from gpu.device import default_device  # noqa: PLC0415

    device = default_device()
    saved_backend = device.config  # QuiverEngine forces the CPU backend: process-wide
    try:
        for name in cfg.datasets:
            try:
                run_dataset(name, cfg, load, res)
            except Exception as exc:  # noqa: BLE001 - one data set breaking keeps the others
                res["datasets"][name] = {"missing": f"{type(exc).__name__}: {exc}"}
                progress(f"{name}: FAILED: {traceback.format_exc()}")
    finally:
        device.configure(saved_backend)  # a test may call main() inside a larger run
    res["total_s"] = time.monotonic() - t_start
    noisy = [k for k, s in load.sections.items() if s["foreign_cores"] >= NOISY_CORES]
    if noisy:
        res["notes"].append(f"{len(noisy)} of {len(load.sections)} measured sections had "
                            f"≥ {NOISY_CORES} foreign cores (marked NOISY)")
    res["load_sections"] = load.sections
    tag = "-quick" if cfg.quick else ""
    json_path = Path(cfg.out) if cfg.out else RESULTS_DIR / (
        f"{started:%Y-%m-%d}-{m['hostname']}-ann{tag}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md = write_report(res, json_path)
    json_path.write_text(json.dumps(res, indent=1, default=str))
    print(tables(res))
    progress(f"wrote {json_path} and {md} ({res['total_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
