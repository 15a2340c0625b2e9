"""Foundation benchmark: ingest throughput, query latency, filtered latency and memory of a
Quiver server started here in a subprocess, with in-process and Qdrant local-mode peers.

    .venv/bin/python -m bench.foundation            # full run (~5-10 min on 2 cores)
    .venv/bin/python -m bench.foundation --quick    # CI smoke (< 2 min, smaller N)
    .venv/bin/python -m bench.foundation --n 50000  # points for the ingest/query phases

Targets are reported as PASS/FAIL, never asserted: the exit status is 0 whenever the run
completed (1 if the benchmark itself broke). A readable table goes to stdout, progress to
stderr, raw figures to bench/results/<date>-foundation[-quick]-<host>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench import data
from bench.server import ROOT, Server
from bench.sysload import LoadLog, proc_cpu_s, wait_quiet

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COLL = "bench"
BATCH = 1000
LIMIT = 10
TAG = "t3"
FILTER = {"must": [{"key": "tag", "match": {"value": TAG}}]}
RECALL_QUERIES = 50
PEER_CAP_POINTS = 100_000
PEER_CAP_QUERIES = 50
WARMUP = 20
SETTLE_S = 6.5  # the server's idle flush fires after 5 s without writes (storage.flush)

TARGET_UPSERT = 20_000  # points/s
TARGET_P50_MS = 5.0
TARGET_FILTER_RATIO = 2.0
TARGET_RSS_BYTES = 1.5e9  # 1.5 GB (decimal: the stricter reading)
TARGET_RSS_POINTS = 1_000_000

_T0 = time.monotonic()


def progress(phase: str, msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {phase}: {msg}", file=sys.stderr, flush=True)


@dataclass
class Config:
    quick: bool
    n: int  # points for the ingest + latency phases
    rss_n: int  # points for the memory phase
    queries: int  # timed queries per latency measurement
    peer_n: int
    peer_queries: int
    settle_s: float
    server_env: dict[str, str]


def make_config(args: argparse.Namespace) -> Config:
    if args.quick:
        cfg = Config(True, 20_000, 200_000, 300, 10_000, 30, SETTLE_S, {})
    else:
        cfg = Config(False, 100_000, TARGET_RSS_POINTS, 500, PEER_CAP_POINTS, PEER_CAP_QUERIES,
                     SETTLE_S, {})
    for item in args.server_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {item!r}")
        cfg.server_env[key] = value
    if args.n:
        cfg.n = args.n
        cfg.peer_n = min(args.n, PEER_CAP_POINTS)
    if args.rss_n:
        cfg.rss_n = args.rss_n
    if args.queries:
        cfg.queries = max(args.queries, 1)
    cfg.peer_n = min(cfg.peer_n, cfg.n, PEER_CAP_POINTS)
    cfg.peer_queries = min(cfg.peer_queries, PEER_CAP_QUERIES)
    return cfg


# ---- statistics --------------------------------------------------------------------------------


def lat_stats(ns: Iterable[int]) -> dict[str, Any]:
    a = np.asarray(list(ns), dtype=np.float64) / 1e6
    if a.size == 0:
        return {"count": 0}
    return {
        "count": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "samples_ms": [round(float(x), 4) for x in a],
    }


def timed_loop(fn: Callable[[int], Any], count: int, n_items: int, warmup: int = WARMUP
               ) -> list[int]:
    """Call fn(i % n_items) `warmup` times untimed, then `count` times timed (ns each)."""
    for i in range(warmup):
        fn(i % n_items)
    gc.collect()
    out = []
    for i in range(count):
        t = time.perf_counter_ns()
        fn((warmup + i) % n_items)
        out.append(time.perf_counter_ns() - t)
    return out


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[:k]) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(found))


# ---- environment -------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import faiss  # noqa: PLC0415

        out["faiss"] = getattr(faiss, "__version__", None) or _version("faiss-cpu")
    except Exception as exc:  # noqa: BLE001
        out["faiss"] = f"missing: {exc}"
    for dist in ("qdrant-client", "httpx", "orjson", "uvicorn", "fastapi", "starlette",
                 "uvloop", "httptools", "quiver"):
        out[dist] = _version(dist)
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        out["quiver_git"] = rev + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        out["quiver_git"] = None
    return out


def machine() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    cpu_max = None
    try:
        cpu_max = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"hostname": socket.gethostname(), "cpu_model": cpu, "logical_cpus": os.cpu_count(),
            "cpus_usable": affinity, "cgroup_cpu_max": cpu_max, "mem_total_bytes": mem,
            "kernel": platform.release(), "platform": platform.platform()}


# ---- HTTP helpers -------------------------------------------------------------------------------


def check(resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code != 200:
        raise RuntimeError(f"{resp.request.method} {resp.request.url} → {resp.status_code}: "
                           f"{resp.text[:500]}")
    return orjson.loads(resp.content)


def create_collection(http: httpx.Client, name: str, dim: int) -> None:
    http.delete(f"/collections/{name}")
    check(http.put(f"/collections/{name}", content=orjson.dumps(
        {"vectors": {"size": dim, "distance": "Cosine"}}),
        headers={"content-type": "application/json"}))


def count_points(http: httpx.Client, name: str) -> int:
    return check(http.post(f"/collections/{name}/points/count",
                           content=b'{"exact": true}'))["result"]["count"]


JSON_HEADERS = {"content-type": "application/json"}


def ingest_raw(http: httpx.Client, name: str, x: np.ndarray, form: str, label: str,
               server_pid: int | None = None) -> dict[str, Any]:
    """Upsert x in batches of BATCH through raw httpx with orjson bodies (wait=true).
    Timed end to end, client-side serialisation included."""
    n = len(x)
    rtts: list[int] = []
    ser_ns = 0
    server_s = 0.0
    cpu0 = _cpu_pair(server_pid)
    t0 = time.perf_counter_ns()
    next_report = time.monotonic() + 10
    for s in range(0, n, BATCH):
        e = min(n, s + BATCH)
        t_ser = time.perf_counter_ns()
        if form == "batch":
            body = {"batch": {"ids": list(range(s, e)), "vectors": x[s:e],
                              "payloads": data.payloads(s, e)}}
        else:
            body = {"points": [{"id": i, "vector": x[i], "payload": data.payload(i)}
                               for i in range(s, e)]}
        raw = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        t_req = time.perf_counter_ns()
        ser_ns += t_req - t_ser
        r = check(http.put(f"/collections/{name}/points", params={"wait": "true"},
                           content=raw, headers=JSON_HEADERS))
        rtts.append(time.perf_counter_ns() - t_req)
        server_s += float(r.get("time", 0.0))
        if r["result"]["status"] != "completed":
            raise RuntimeError(f"upsert not completed: {r}")
        if time.monotonic() > next_report:
            el = (time.perf_counter_ns() - t0) / 1e9
            progress(label, f"{e:,}/{n:,} points, {e / el:,.0f} points/s so far")
            next_report = time.monotonic() + 10
    wall = (time.perf_counter_ns() - t0) / 1e9
    st = lat_stats(rtts)
    st.pop("samples_ms")
    return {"points": n, "batch": BATCH, "form": form, "wall_s": wall,
            "points_per_s": n / wall, "client_serialize_s": ser_ns / 1e9,
            "server_handler_s": server_s, "body_bytes_last": len(raw), "batch_rtt": st,
            **_cpu_split(cpu0, _cpu_pair(server_pid))}


def _cpu_pair(server_pid: int | None) -> tuple[float, float | None]:
    return proc_cpu_s(), (proc_cpu_s(server_pid) if server_pid else None)


def _cpu_split(a: tuple[float, float | None], b: tuple[float, float | None]) -> dict[str, Any]:
    out: dict[str, Any] = {"client_cpu_s": b[0] - a[0]}
    if a[1] is not None and b[1] is not None:
        out["server_cpu_s"] = b[1] - a[1]
    return out


def ingest_qdrant_client(client: Any, name: str, x: np.ndarray, label: str,
                         server_pid: int | None = None) -> dict[str, Any]:
    """Upsert via qdrant-client `upsert(points=models.Batch(...), wait=True)`; the numpy →
    list conversion a caller with numpy data needs is included in the timing."""
    from qdrant_client import models  # noqa: PLC0415

    n = len(x)
    calls: list[int] = []
    cpu0 = _cpu_pair(server_pid)
    t0 = time.perf_counter_ns()
    next_report = time.monotonic() + 10
    for s in range(0, n, BATCH):
        e = min(n, s + BATCH)
        t = time.perf_counter_ns()
        client.upsert(collection_name=name, wait=True, points=models.Batch(
            ids=list(range(s, e)), vectors=x[s:e].tolist(), payloads=data.payloads(s, e)))
        calls.append(time.perf_counter_ns() - t)
        if time.monotonic() > next_report:
            el = (time.perf_counter_ns() - t0) / 1e9
            progress(label, f"{e:,}/{n:,} points, {e / el:,.0f} points/s so far")
            next_report = time.monotonic() + 10
    wall = (time.perf_counter_ns() - t0) / 1e9
    st = lat_stats(calls)
    st.pop("samples_ms")
    return {"points": n, "batch": BATCH, "wall_s": wall, "points_per_s": n / wall,
            "batch_call": st, **_cpu_split(cpu0, _cpu_pair(server_pid))}


class RawQuery:
    """POST /points/query through one keep-alive httpx.Client, orjson in and out."""

    def __init__(self, http: httpx.Client, name: str, q: np.ndarray,
                 flt: dict[str, Any] | None = None) -> None:
        self.http, self.url, self.q, self.flt = http, f"/collections/{name}/points/query", q, flt
        self.server_s: list[float] = []
        self.last_ids: list[int] = []

    def __call__(self, i: int) -> list[int]:
        body: dict[str, Any] = {"query": self.q[i], "limit": LIMIT, "with_payload": True}
        if self.flt is not None:
            body["filter"] = self.flt
        r = self.http.post(self.url, content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                           headers=JSON_HEADERS)
        doc = check(r)
        self.server_s.append(float(doc.get("time", 0.0)))
        ids = [p["id"] for p in doc["result"]["points"]]
        self.last_ids = ids
        return ids


def qc_filter() -> Any:
    from qdrant_client import models  # noqa: PLC0415

    return models.Filter(must=[models.FieldCondition(key="tag",
                                                     match=models.MatchValue(value=TAG))])


def qc_query(client: Any, name: str, q: np.ndarray, flt: Any = None) -> Callable[[int], list[int]]:
    def run(i: int) -> list[int]:
        res = client.query_points(collection_name=name, query=q[i], limit=LIMIT,
                                  query_filter=flt, with_payload=True)
        return [p.id for p in res.points]
    return run


# ---- phases -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.res: dict[str, Any] = {"missing": {}}
        self.load = LoadLog()
        self.x: np.ndarray
        self.q: np.ndarray

    def missing(self, what: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self.res["missing"][what] = reason
        progress(what, f"MISSING — {reason}")
        tb = traceback.format_exc()
        if tb and tb.strip() != "NoneType: None":
            print(tb, file=sys.stderr)

    def gen_data(self) -> None:
        cfg = self.cfg
        total = max(cfg.n, cfg.rss_n)
        progress("data", f"generating {total:,} x {data.DIM} clustered unit vectors "
                         f"({data.N_CLUSTERS} centres), {cfg.queries} queries")
        t = time.perf_counter()
        self.all_x = data.points(total)
        self.x = self.all_x[: cfg.n]
        self.q = data.queries(max(cfg.queries, RECALL_QUERIES, WARMUP))
        self.mask = data.tag_mask(cfg.n, TAG)
        self.truth = data.exact_topk(self.x, self.q[:RECALL_QUERIES], LIMIT)
        self.truth_f = data.exact_topk(self.x, self.q[:RECALL_QUERIES], LIMIT, self.mask)
        self.res["data"] = {"dim": data.DIM, "clusters": data.N_CLUSTERS,
                            "spread": data.SPREAD, "seed": data.DATA_SEED,
                            "query_seed": data.QUERY_SEED, "n": cfg.n, "rss_n": cfg.rss_n,
                            "payload": "{'tag': 't{i%10}', 'n': i}", "filter_tag": TAG,
                            "filter_selectivity": float(self.mask.mean()),
                            "gen_s": time.perf_counter() - t}

    # -- in-process references --

    def references(self) -> None:
        x, q, mask = self.x, self.q, self.mask
        n_q = len(q)
        out: dict[str, Any] = {}

        def np_exact(i: int) -> np.ndarray:
            s = x @ q[i]
            top = np.argpartition(-s, LIMIT - 1)[:LIMIT]
            return top[np.argsort(-s[top])]

        def np_filtered(i: int) -> np.ndarray:
            s = x @ q[i]
            s[~mask] = -np.inf
            top = np.argpartition(-s, LIMIT - 1)[:LIMIT]
            return top[np.argsort(-s[top])]

        progress("reference", f"numpy exact X @ q + argpartition, {self.cfg.queries} queries")
        with self.load.measure("reference_numpy"):
            out["numpy_exact"] = lat_stats(timed_loop(np_exact, self.cfg.queries, n_q))
            out["numpy_filtered_mask"] = lat_stats(timed_loop(np_filtered, self.cfg.queries,
                                                              n_q))
        found = [np_exact(i).tolist() for i in range(RECALL_QUERIES)]
        out["numpy_exact"]["recall_at_10"] = recall(found, self.truth)
        self.res["reference"] = out
        try:
            import faiss  # noqa: PLC0415

            faiss.omp_set_num_threads(1)  # as the server does
            progress("reference", "faiss.knn (1 thread, what the server calls per segment)")

            def fk(i: int) -> Any:
                return faiss.knn(q[i : i + 1], x, LIMIT, metric=faiss.METRIC_INNER_PRODUCT)

            out["faiss_knn_1thread"] = lat_stats(timed_loop(fk, self.cfg.queries, n_q))
        except Exception as exc:  # noqa: BLE001
            self.missing("reference.faiss_knn_1thread", exc)

    # -- Quiver: ingest + latency --

    def _filtered_phase(self, out: dict[str, Any], tag: str, rq: RawQuery, queries: int,
                        nq: int) -> None:
        """Latency, server time and recall of the filtered query, with or without an index."""
        key = f"query_filtered_{tag}"
        with self.load.measure(key):
            out[key] = lat_stats(timed_loop(rq, queries, nq))
        out[key]["server_time"] = _server_times(rq.server_s[-queries:])
        found = [rq(i) for i in range(RECALL_QUERIES)]
        out[f"recall_at_10_filtered_{tag}"] = recall(found, self.truth_f)

    def quiver_main(self) -> None:
        cfg = self.cfg
        out: dict[str, Any] = {}
        self.res["quiver"] = out
        progress("quiver", "starting server")
        with Server(env=cfg.server_env) as srv, httpx.Client(base_url=srv.url, timeout=300) as http:
            out["server_cmd"] = "quiver serve (QUIVER__GPU__ENABLED=false, default config)"
            out["rss_after_start"] = srv.memory()
            # 1. ingest, three ways, each into a fresh collection
            create_collection(http, COLL, data.DIM)
            progress("ingest.raw_batch", f"{cfg.n:,} points, raw httpx + orjson, batch form")
            with self.load.measure("ingest_raw_batch"):
                out["ingest_raw_batch"] = ingest_raw(http, COLL, self.x, "batch",
                                                     "ingest.raw_batch", srv.pid)
            assert count_points(http, COLL) == cfg.n
            progress("ingest.raw_batch", f"{out['ingest_raw_batch']['points_per_s']:,.0f} points/s")

            create_collection(http, "bench_list", data.DIM)
            progress("ingest.raw_points", f"{cfg.n:,} points, raw httpx + orjson, points-list form")
            with self.load.measure("ingest_raw_points"):
                out["ingest_raw_points"] = ingest_raw(http, "bench_list", self.x, "points",
                                                      "ingest.raw_points", srv.pid)
            progress("ingest.raw_points",
                     f"{out['ingest_raw_points']['points_per_s']:,.0f} points/s")
            http.delete("/collections/bench_list")

            client = None
            try:
                from qdrant_client import QdrantClient  # noqa: PLC0415

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    client = QdrantClient(url=srv.url, timeout=300)
                create_collection(http, "bench_qc", data.DIM)
                progress("ingest.qdrant_client", f"{cfg.n:,} points, qdrant-client upsert(Batch)")
                with self.load.measure("ingest_qdrant_client"):
                    out["ingest_qdrant_client"] = ingest_qdrant_client(
                        client, "bench_qc", self.x, "ingest.qdrant_client", srv.pid)
                progress("ingest.qdrant_client",
                         f"{out['ingest_qdrant_client']['points_per_s']:,.0f} points/s")
                http.delete("/collections/bench_qc")
            except Exception as exc:  # noqa: BLE001
                self.missing("quiver.ingest_qdrant_client", exc)
            out["rss_after_ingest"] = srv.memory()

            progress("settle", f"waiting {cfg.settle_s:.1f}s for the server's idle flush")
            time.sleep(cfg.settle_s)

            # 2. unfiltered latency
            q = self.q
            raw = RawQuery(http, COLL, q)
            progress("query.raw", f"{cfg.queries} unfiltered queries, raw httpx keep-alive")
            with self.load.measure("query_raw"):
                out["query_raw"] = lat_stats(timed_loop(raw, cfg.queries, len(q)))
            out["query_raw"]["server_time"] = _server_times(raw.server_s[-cfg.queries:])
            if client is not None:
                try:
                    progress("query.qdrant_client", f"{cfg.queries} unfiltered queries")
                    with self.load.measure("query_qdrant_client"):
                        out["query_qdrant_client"] = lat_stats(
                            timed_loop(qc_query(client, COLL, q), cfg.queries, len(q)))
                except Exception as exc:  # noqa: BLE001
                    self.missing("quiver.query_qdrant_client", exc)

            # 3. filtered latency, without then with a keyword index
            rawf = RawQuery(http, COLL, q, FILTER)
            t = time.perf_counter_ns()
            rawf(0)
            out["filtered_first_query_noindex_ms"] = (time.perf_counter_ns() - t) / 1e6
            progress("query.filtered_noindex", f"{cfg.queries} queries, tag == {TAG!r}, no index "
                     f"(first query {out['filtered_first_query_noindex_ms']:.1f} ms)")
            self._filtered_phase(out, "noindex", rawf, cfg.queries, len(q))

            t = time.perf_counter_ns()
            check(http.put(f"/collections/{COLL}/index", params={"wait": "true"},
                           content=orjson.dumps({"field_name": "tag", "field_schema": "keyword"}),
                           headers=JSON_HEADERS))
            out["create_index_ms"] = (time.perf_counter_ns() - t) / 1e6
            rawi = RawQuery(http, COLL, q, FILTER)
            progress("query.filtered_index", f"{cfg.queries} queries, keyword index on `tag` "
                     f"(created in {out['create_index_ms']:.1f} ms)")
            self._filtered_phase(out, "index", rawi, cfg.queries, len(q))
            if client is not None:
                try:
                    with self.load.measure("query_filtered_index_qdrant_client"):
                        out["query_filtered_index_qdrant_client"] = lat_stats(timed_loop(
                            qc_query(client, COLL, q, qc_filter()), cfg.queries, len(q)))
                except Exception as exc:  # noqa: BLE001
                    self.missing("quiver.query_filtered_index_qdrant_client", exc)

            # 4. recall vs numpy exact ground truth
            progress("recall", f"recall@10 over {RECALL_QUERIES} queries vs numpy exact")
            found = [raw(i) for i in range(RECALL_QUERIES)]
            out["recall_at_10"] = recall(found, self.truth)
            out["rss_after_queries"] = srv.memory()
            if client is not None:
                client.close()

    # -- Quiver: memory at rss_n points --

    def quiver_memory(self) -> None:
        cfg = self.cfg
        out: dict[str, Any] = {"points": cfg.rss_n, "quick": cfg.quick}
        self.res["quiver_memory"] = out
        progress("memory", f"fresh server, ingesting {cfg.rss_n:,} points (raw httpx, batch form)")
        with Server(env=cfg.server_env) as srv, httpx.Client(base_url=srv.url, timeout=300) as http:
            out["server_pid"] = srv.pid
            out["rss_before"] = srv.memory()
            create_collection(http, COLL, data.DIM)
            with self.load.measure("memory_ingest"):
                out["ingest"] = ingest_raw(http, COLL, self.all_x[: cfg.rss_n], "batch",
                                           "memory.ingest", srv.pid)
            out["rss_after_ingest"] = srv.memory()
            progress("memory", f"ingest {out['ingest']['points_per_s']:,.0f} points/s; VmRSS "
                     f"{_mb(out['rss_after_ingest']['VmRSS'])}; settling {cfg.settle_s:.1f}s")
            time.sleep(cfg.settle_s)
            out["rss_after_settle"] = srv.memory()
            assert count_points(http, COLL) == cfg.rss_n
            # a few queries at this scale (informative; the latency targets use cfg.n)
            nq = 20
            raw = RawQuery(http, COLL, self.q)
            out["query_raw"] = lat_stats(timed_loop(raw, nq, len(self.q), warmup=3))
            rawf = RawQuery(http, COLL, self.q, FILTER)
            out["query_filtered_noindex"] = lat_stats(timed_loop(rawf, nq, len(self.q),
                                                                 warmup=3))
            out["rss_after_queries"] = srv.memory()
            progress("memory", f"VmRSS after settle {_mb(out['rss_after_settle']['VmRSS'])}, "
                     f"after queries {_mb(out['rss_after_queries']['VmRSS'])}, "
                     f"VmHWM {_mb(out['rss_after_queries']['VmHWM'])}")
        base = out["rss_before"]["VmRSS"]
        after = out["rss_after_settle"]["VmRSS"]
        out["bytes_per_point"] = (after - base) / cfg.rss_n
        out["projected_rss_at_1M"] = base + out["bytes_per_point"] * TARGET_RSS_POINTS

    # -- peer: qdrant-client local mode --

    def peer_local(self) -> None:
        cfg = self.cfg
        n, nq = cfg.peer_n, cfg.peer_queries
        out: dict[str, Any] = {"points": n, "queries": nq,
                               "note": f"capped at {PEER_CAP_POINTS:,} points / "
                                       f"{PEER_CAP_QUERIES} queries (local mode is slow)"}
        try:
            from qdrant_client import QdrantClient, models  # noqa: PLC0415

            warnings.filterwarnings("ignore", message="Local mode is not recommended")
            client = QdrantClient(":memory:")
            client.create_collection(COLL, vectors_config=models.VectorParams(
                size=data.DIM, distance=models.Distance.COSINE))
            progress("peer.local", f"QdrantClient(':memory:') ingest {n:,} points")
            with self.load.measure("peer_local_ingest"):
                out["ingest"] = ingest_qdrant_client(client, COLL, self.x[:n], "peer.local")
            progress("peer.local", f"{out['ingest']['points_per_s']:,.0f} points/s; "
                     f"{nq} queries")
            run = qc_query(client, COLL, self.q)
            with self.load.measure("peer_local_query"):
                out["query"] = lat_stats(timed_loop(run, nq, len(self.q), warmup=3))
            truth = self.truth if n == cfg.n else data.exact_topk(
                self.x[:n], self.q[:RECALL_QUERIES], LIMIT)
            k = min(RECALL_QUERIES, nq)
            out["recall_at_10"] = recall([run(i) for i in range(k)], truth[:k])
            nf = min(10, nq)
            progress("peer.local", f"{nf} filtered queries (no index)")
            out["query_filtered"] = lat_stats(timed_loop(qc_query(client, COLL, self.q,
                                                                  qc_filter()), nf, len(self.q),
                                                         warmup=1))
            client.close()
            self.res["peer_qdrant_local"] = out
        except Exception as exc:  # noqa: BLE001
            self.res["peer_qdrant_local"] = out
            self.missing("peer_qdrant_local", exc)


def _server_times(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64) * 1e3
    if a.size == 0:
        return {}
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def _mb(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


# ---- report -------------------------------------------------------------------------------------


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _status(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def build_rows(res: dict[str, Any], cfg: Config) -> list[tuple[str, str, str, str]]:
    """(metric, value, target, status) rows; section headers have value ''."""
    rows: list[tuple[str, str, str, str]] = []
    missing = res.get("missing", {})

    def add(metric: str, value: Any, fmt: str = "{:,.2f}", target: str = "",
            ok: bool | None = None, missing_key: str | None = None) -> None:
        if value is None:
            why = missing.get(missing_key or "", "not measured")
            rows.append((metric, f"MISSING ({why[:60]})", target, "—"))
            return
        rows.append((metric, fmt.format(value), target, _status(ok) if target else ""))

    def section(title: str) -> None:
        rows.append((f"== {title}", "", "", ""))

    n = cfg.n
    section(f"1. REST upsert, {n:,} x {data.DIM}d Cosine, batches of {BATCH}, wait=true")
    for key, label, mk in (("ingest_raw_batch", "raw httpx+orjson, batch form", None),
                           ("ingest_raw_points", "raw httpx+orjson, points-list form", None),
                           ("ingest_qdrant_client", "qdrant-client upsert(models.Batch)",
                            "quiver.ingest_qdrant_client")):
        v = _get(res, "quiver", key, "points_per_s")
        add(f"{label} [points/s]", v, "{:,.0f}", f">= {TARGET_UPSERT:,}",
            None if v is None else v >= TARGET_UPSERT, mk)
    for key, label in (("ingest_raw_batch", "raw batch"), ("ingest_raw_points", "raw points"),
                       ("ingest_qdrant_client", "qdrant-client")):
        v = _get(res, "quiver", key)
        if v and "server_cpu_s" in v:
            add(f"  {label}: CPU per second of wall, client / server [cores]",
                f"{v['client_cpu_s'] / v['wall_s']:.2f} / {v['server_cpu_s'] / v['wall_s']:.2f}",
                "{}")

    section(f"2. query_points latency, limit {LIMIT}, unfiltered, {cfg.queries} queries")
    for key, label, mk in (("query_raw", "raw httpx keep-alive", None),
                           ("query_qdrant_client", "qdrant-client QdrantClient(url=...)",
                            "quiver.query_qdrant_client")):
        p50 = _get(res, "quiver", key, "p50_ms")
        add(f"{label} p50 [ms]", p50, "{:.2f}", f"<= {TARGET_P50_MS:g}",
            None if p50 is None else p50 <= TARGET_P50_MS, mk)
        add(f"{label} p99 [ms]", _get(res, "quiver", key, "p99_ms"), "{:.2f}", missing_key=mk)
    add("  server-side handler time p50 [ms] (raw)",
        _get(res, "quiver", "query_raw", "server_time", "p50_ms"), "{:.2f}")
    add(f"recall@10 vs numpy exact ({RECALL_QUERIES} queries)",
        _get(res, "quiver", "recall_at_10"), "{:.4f}", "== 1.0",
        None if _get(res, "quiver", "recall_at_10") is None
        else _get(res, "quiver", "recall_at_10") >= 1.0)

    section(f"3. filtered query, tag == {TAG!r} (~10%), raw httpx, {cfg.queries} queries")
    unf = _get(res, "quiver", "query_raw", "p50_ms")
    add("first filtered query, no index (cold) [ms]",
        _get(res, "quiver", "filtered_first_query_noindex_ms"), "{:.2f}")
    for key, label in (("query_filtered_noindex", "no payload index"),
                       ("query_filtered_index", "keyword index on `tag`")):
        p50 = _get(res, "quiver", key, "p50_ms")
        add(f"{label}: p50 [ms]", p50, "{:.2f}")
        add(f"{label}: p99 [ms]", _get(res, "quiver", key, "p99_ms"), "{:.2f}")
        ratio = p50 / unf if p50 is not None and unf else None
        add(f"{label}: filtered/unfiltered p50", ratio, "{:.2f}x",
            f"<= {TARGET_FILTER_RATIO:g}x", None if ratio is None else ratio <= TARGET_FILTER_RATIO)
    add("  qdrant-client, with index: p50 [ms]",
        _get(res, "quiver", "query_filtered_index_qdrant_client", "p50_ms"), "{:.2f}",
        missing_key="quiver.query_filtered_index_qdrant_client")
    add("create keyword index [ms]", _get(res, "quiver", "create_index_ms"), "{:.1f}")
    for key in ("recall_at_10_filtered_noindex", "recall_at_10_filtered_index"):
        r = _get(res, "quiver", key)
        add(f"{key.replace('_', ' ')}", r, "{:.4f}", "== 1.0", None if r is None else r >= 1.0)

    m = res.get("quiver_memory") or {}
    rss_n = cfg.rss_n
    full = rss_n >= TARGET_RSS_POINTS
    section(f"4. server memory, {rss_n:,} x {data.DIM}d + small payloads"
            + ("" if full else f"  (QUICK/SMALL N: target is for {TARGET_RSS_POINTS:,}; "
                               "judged on the projection)"))
    rss = _get(m, "rss_after_settle", "VmRSS")
    tgt = f"<= {TARGET_RSS_BYTES / 1e9:g} GB"
    imm = _get(m, "rss_after_ingest", "VmRSS")
    add("VmRSS right after ingest [MiB]", None if imm is None else imm / 2**20, "{:,.0f}",
        missing_key="quiver_memory")
    add("VmRSS after ingest + idle flush [MiB]", None if rss is None else rss / 2**20,
        "{:,.0f}", tgt if full else "", (rss <= TARGET_RSS_BYTES) if full and rss else None,
        "quiver_memory")
    add("VmRSS after 40 queries at this N [MiB]",
        None if not _get(m, "rss_after_queries") else m["rss_after_queries"]["VmRSS"] / 2**20,
        "{:,.0f}")
    add("VmHWM (peak RSS) [MiB]",
        None if not _get(m, "rss_after_queries") else m["rss_after_queries"]["VmHWM"] / 2**20,
        "{:,.0f}")
    add("bytes per point (RSS delta / N)", _get(m, "bytes_per_point"), "{:,.0f}")
    proj = _get(m, "projected_rss_at_1M")
    add("projected VmRSS at 1M points [MiB]", None if proj is None else proj / 2**20, "{:,.0f}",
        "" if full else tgt, None if full or proj is None else proj <= TARGET_RSS_BYTES)
    add("ingest at this N (raw batch) [points/s]", _get(m, "ingest", "points_per_s"), "{:,.0f}")
    add("unfiltered p50 at this N [ms]", _get(m, "query_raw", "p50_ms"), "{:.2f}")
    add("filtered (no index) p50 at this N [ms]", _get(m, "query_filtered_noindex", "p50_ms"),
        "{:.2f}")

    p = res.get("peer_qdrant_local") or {}
    ref = res.get("reference") or {}
    section(f"5. peers: QdrantClient(':memory:') on {cfg.peer_n:,} points / {cfg.peer_queries} "
            f"queries; in-process references on {n:,}")
    pk = "peer_qdrant_local"
    add("peer local: upsert [points/s]", _get(p, "ingest", "points_per_s"), "{:,.0f}",
        missing_key=pk)
    add("peer local: query p50 [ms]", _get(p, "query", "p50_ms"), "{:.2f}", missing_key=pk)
    add("peer local: filtered query p50 [ms] (10 queries)", _get(p, "query_filtered", "p50_ms"),
        "{:.2f}", missing_key=pk)
    add("peer local: recall@10", _get(p, "recall_at_10"), "{:.4f}", missing_key=pk)
    same = cfg.peer_n == cfg.n
    note = "" if same else f"  (peer on {cfg.peer_n:,} pts, Quiver on {n:,})"
    qi = _get(res, "quiver", "ingest_qdrant_client", "points_per_s")
    qr = _get(res, "quiver", "ingest_raw_batch", "points_per_s")
    pi = _get(p, "ingest", "points_per_s")
    add("ratio upsert Quiver(qdrant-client)/peer" + note,
        qi / pi if qi and pi else None, "{:.2f}x", missing_key=pk)
    add("ratio upsert Quiver(raw httpx)/peer" + note, qr / pi if qr and pi else None, "{:.2f}x",
        missing_key=pk)
    pq = _get(p, "query", "p50_ms")
    for key, label in (("query_qdrant_client", "qdrant-client"), ("query_raw", "raw httpx")):
        v = _get(res, "quiver", key, "p50_ms")
        add(f"ratio query p50 Quiver({label})/peer" + note, v / pq if v and pq else None,
            "{:.3f}x", missing_key=pk)
    npx = _get(ref, "numpy_exact", "p50_ms")
    add("numpy X @ q + argpartition p50 [ms]", npx, "{:.3f}")
    add("numpy masked (filtered) p50 [ms]", _get(ref, "numpy_filtered_mask", "p50_ms"), "{:.3f}")
    add("faiss.knn 1 thread p50 [ms]", _get(ref, "faiss_knn_1thread", "p50_ms"), "{:.3f}",
        missing_key="reference.faiss_knn_1thread")
    if npx and unf:
        add("ratio query p50 Quiver(raw httpx)/numpy", unf / npx, "{:.2f}x")
        add("HTTP+server overhead over numpy p50 [ms]", unf - npx, "{:.2f}")

    fl = res.get("foreign_load") or {}
    section("run conditions: CPU used by other processes during each measurement [cores]")
    for name, v in fl.items():
        top = v["top_foreign"][0] if v["top_foreign"] else None
        who = f"  (top: {top['comm']} {top['cores']:.2f})" if top and top["cores"] >= 0.05 else ""
        rows.append((f"{name}{who}", f"{v['foreign_cores']:.2f}", "< 0.10",
                     "quiet" if v["foreign_cores"] < 0.10 else "NOISY"))
    return rows


def render_table(rows: list[tuple[str, str, str, str]]) -> str:
    w0 = max(len(r[0]) for r in rows if not r[0].startswith("=="))
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{'metric':<{w0}}  {'value':>{w1}}  {'target':<{w2}}  status"]
    lines.append("-" * len(lines[0]))
    for m, v, t, s in rows:
        if m.startswith("=="):
            lines.append("")
            lines.append(m)
        else:
            lines.append(f"{m:<{w0}}  {v:>{w1}}  {t:<{w2}}  {s}")
    return "\n".join(lines)


def summary(rows: list[tuple[str, str, str, str]]) -> dict[str, str]:
    return {m: s for m, _, _, s in rows if s in ("PASS", "FAIL")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.foundation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke: 20k points, 200k for the memory phase, peer 10k (< 2 min)")
    ap.add_argument("--n", type=int, help="points for the ingest and latency phases "
                                         "(default 100000; quick 20000)")
    ap.add_argument("--rss-n", type=int, help="points for the memory phase "
                                             "(default 1000000; quick 200000)")
    ap.add_argument("--queries", type=int, help="timed queries per latency figure "
                                               "(default 500; quick 300)")
    ap.add_argument("--out", help="JSON output path (default bench/results/<date>-foundation"
                                  "[-quick]-<host>.json)")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the Quiver server processes (repeatable), "
                         "e.g. OMP_NUM_THREADS=1 to try a configuration change")
    ap.add_argument("--wait-quiet", type=float, metavar="SECONDS",
                    help="before each phase wait (at most 90 s each, this long in all) "
                         "for other processes to leave the CPUs idle (default 300 full, 0 "
                         "quick)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["memory", "peer", "reference"], help="skip a phase (repeatable)")
    args = ap.parse_args(argv)
    cfg = make_config(args)
    started = dt.datetime.now(dt.UTC)
    b = Bench(cfg)
    b.res["config"] = asdict(cfg)
    b.res["machine"] = machine()
    b.res["versions"] = versions()
    b.res["started_utc"] = started.isoformat()
    b.res["environment"] = {k: v for k, v in os.environ.items()
                            if k.startswith(("OMP_", "GOMP_", "OPENBLAS_", "MKL_", "QUIVER__"))}
    b.res["server_env"] = dict(cfg.server_env)
    b.res["targets"] = {"upsert_points_per_s": TARGET_UPSERT, "query_p50_ms": TARGET_P50_MS,
                        "filtered_over_unfiltered_p50": TARGET_FILTER_RATIO,
                        "rss_bytes_at_1M": TARGET_RSS_BYTES}
    m = b.res["machine"]
    progress("start", f"{'QUICK' if cfg.quick else 'FULL'} run on {m['hostname']}: "
             f"{m['cpu_model']}, {m['cpus_usable']} CPUs, "
             f"{(m['mem_total_bytes'] or 0) / 2**30:.1f} GiB RAM")
    broke = False
    budget = args.wait_quiet if args.wait_quiet is not None else (0 if cfg.quick else 300)
    waits: dict[str, Any] = {}
    b.res["wait_quiet"] = waits

    def settle_machine(phase: str) -> None:
        nonlocal budget
        if budget <= 0:
            return
        t = time.monotonic()
        w = wait_quiet(min(budget, 90), report=lambda m: progress(phase, m))
        budget -= time.monotonic() - t
        waits[phase] = w
        if not w["quiet"]:
            progress(phase, "machine still busy: running anyway, figures will be NOISY")

    try:
        b.gen_data()
        phases: list[tuple[str, Callable[[], None]]] = [("quiver", b.quiver_main)]
        if "reference" not in args.skip:
            phases.append(("reference", b.references))
        if "peer" not in args.skip:
            phases.append(("peer_qdrant_local", b.peer_local))
        if "memory" not in args.skip:
            phases.append(("quiver_memory", b.quiver_memory))
        for name, fn in phases:
            settle_machine(name)
            t = time.monotonic()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - report, keep going with other phases
                b.missing(name, exc)
                broke = broke or name.startswith("quiver")
            b.res.setdefault("phase_seconds", {})[name] = time.monotonic() - t
        for skipped in args.skip:
            b.res["missing"][skipped] = "skipped by --skip"
    except KeyboardInterrupt:
        progress("abort", "interrupted; writing partial results")
        broke = True
    b.res["total_seconds"] = time.monotonic() - _T0
    b.res["foreign_load"] = b.load.sections
    rows = build_rows(b.res, cfg)
    b.res["summary"] = summary(rows)
    table = render_table(rows)
    print()
    print(f"Quiver foundation benchmark — {'QUICK' if cfg.quick else 'FULL'} mode, "
          f"{started:%Y-%m-%d %H:%M} UTC, {m['hostname']}")
    print(f"machine: {m['cpu_model']}, {m['cpus_usable']} usable CPUs "
          f"(server and client share them), {(m['mem_total_bytes'] or 0) / 2**30:.1f} GiB RAM")
    v = b.res["versions"]
    print(f"versions: quiver {v.get('quiver_git')}, numpy {v['numpy']}, qdrant-client "
          f"{v.get('qdrant-client')}, faiss {v.get('faiss')}, python {v['python']}")
    print()
    print(table)
    if b.res["missing"]:
        print("\nmissing:")
        for k, why in b.res["missing"].items():
            print(f"  {k}: {why}")
    out = Path(args.out) if args.out else RESULTS_DIR / (
        f"{started:%Y-%m-%d}-foundation{'-quick' if cfg.quick else ''}-{m['hostname']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(b.res, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(f"\nraw figures: {out}   (total {b.res['total_seconds']:.0f}s)")
    return 1 if broke else 0


if __name__ == "__main__":
    sys.exit(main())
