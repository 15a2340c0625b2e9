"""gRPC (port 6334) against REST (6333) on one Quiver server: query latency and bulk upserts.

    .venv/bin/python -m bench.grpc              # 100k x 128 float32, Cosine (a few minutes)
    .venv/bin/python -m bench.grpc --quick      # 10k points, fewer queries (<= 60 s)
    .venv/bin/python -m bench.grpc --json out.json

Data: bench.data's clustered unit vectors (the same set as bench.ann and the suite).

(a) One query at a time, one client, after warm-up, top-10 on an HNSW-indexed collection:
    qdrant-client `query_points` with prefer_grpc=True and with prefer_grpc=False, and the lean
    paths with no client library in the way: a raw `qdrant.Points/Query` stub call (request
    messages built beforehand) and a raw keep-alive `http.client` POST /points/query (bodies
    serialised beforehand, the answer parsed with orjson). The four paths take turns query by
    query (rotating order), so a busy machine slows them alike.
(b) Bulk upserts from the same client with the same batch size: `upload_collection` (numpy
    rows) and `upload_points` (PointStructs built beforehand) with prefer_grpc=True and
    False, wait=True, into collections with HNSW off (m=0) so no index build competes; points/s.

Also timed: loading the query collection (upload_collection over gRPC) and its HNSW build.
Prints one table with ratios (REST / gRPC: > 1 means gRPC is faster). Figures only; nothing
is asserted, and the top-10 ids of the raw gRPC and raw REST paths are compared as a check.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import qdrant_client.grpc as pb
from qdrant_client import QdrantClient, models

from bench import data
from bench.server import Server

LIMIT = 10
COLL = "q"
_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def stats(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {"count": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def clients(srv: Server) -> tuple[QdrantClient, QdrantClient]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = QdrantClient(url=srv.url, grpc_port=srv.grpc_port, prefer_grpc=True, timeout=300)
        r = QdrantClient(url=srv.url, prefer_grpc=False, timeout=300)
    return g, r


def create(r: QdrantClient, name: str, dim: int, hnsw: bool, n: int = 0) -> None:
    """With hnsw, an indexing threshold (Qdrant's default 10 MB) low enough that n points
    get an HNSW index, so --quick measures the same search path as the full run."""
    optimizers = None
    if hnsw and n * dim * 4 < 10_000 * 1024:
        optimizers = models.OptimizersConfigDiff(indexing_threshold=max(1, n * dim * 4 // 2048))
    r.create_collection(name, vectors_config=models.VectorParams(
        size=dim, distance=models.Distance.COSINE),
        hnsw_config=None if hnsw else models.HnswConfigDiff(m=0),
        optimizers_config=optimizers)


def wait_indexed(http: httpx.Client, name: str, n: int, limit_s: float
                 ) -> tuple[float | None, int]:
    """Seconds until the indexer is done (green, and the rows left unindexed are fewer than
    the collection's indexing_threshold: those stay exact-searched, as in Qdrant), and the
    indexed vector count then."""
    t = time.perf_counter()
    while True:
        info = http.get(f"/collections/{name}").json()["result"]
        threshold_kb = info["config"]["optimizer_config"]["indexing_threshold"]
        dim = info["config"]["params"]["vectors"]["size"]
        indexed = int(info["indexed_vectors_count"] or 0)
        if (info["status"] == "green" and info["points_count"] == n
                and (n - indexed) * dim * 4 < threshold_kb * 1024):
            return time.perf_counter() - t, indexed
        if time.perf_counter() - t > limit_s:
            return None, indexed
        time.sleep(0.1)


# ---- (b) bulk upserts -----------------------------------------------------------------------


def bulk(srv: Server, x: np.ndarray, batch: int, points_n: int) -> dict[str, Any]:
    """upload_collection over both transports (all of x), then upload_points (first
    points_n rows); each into a fresh m=0 collection, dropped afterwards."""
    g, r = clients(srv)
    n, dim = x.shape
    ids = list(range(n))
    payloads = data.payloads(0, n)
    structs = [models.PointStruct(id=i, vector=x[i].tolist(), payload=payloads[i])
               for i in range(points_n)]
    out: dict[str, Any] = {}
    for method in ("upload_collection", "upload_points"):
        for label, client in (("rest", r), ("grpc", g)):  # REST first: the warmer run is gRPC's
            name = f"bulk_{label}"
            create(r, name, dim, hnsw=False)
            t = time.perf_counter()
            if method == "upload_collection":
                client.upload_collection(name, vectors=x, payload=payloads, ids=ids,
                                         batch_size=batch, parallel=1, wait=True)
                count = n
            else:
                client.upload_points(name, structs, batch_size=batch, parallel=1, wait=True)
                count = points_n
            wall = time.perf_counter() - t
            assert r.count(name, exact=True).count == count, (method, label)
            r.delete_collection(name)
            out[f"{method}/{label}"] = {"points": count, "batch": batch, "wall_s": wall,
                                        "points_per_s": count / wall}
            progress(f"{method} {label}: {count:,} points in {wall:.1f} s "
                     f"({count / wall:,.0f} points/s)")
    g.close()
    r.close()
    return out


# ---- (a) single-query latency ----------------------------------------------------------------


def latency(srv: Server, qs: np.ndarray, warmup: int) -> tuple[dict[str, Any], int]:
    g, r = clients(srv)
    qlists = [q.tolist() for q in qs]
    reqs = [pb.QueryPoints(collection_name=COLL, limit=LIMIT, query=pb.Query(
        nearest=pb.VectorInput(dense=pb.DenseVector(data=q)))) for q in qlists]
    bodies = [orjson.dumps({"query": q, "limit": LIMIT}) for q in qlists]
    channel = grpc.insecure_channel(srv.grpc_target)
    stub = pb.PointsStub(channel)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    path = f"/collections/{COLL}/points/query"
    headers = {"content-type": "application/json"}
    got: dict[str, list[list[Any]]] = {"raw grpc": [], "raw rest": []}

    def raw_rest(i: int) -> list[Any]:
        conn.request("POST", path, body=bodies[i], headers=headers)
        resp = conn.getresponse()
        body = orjson.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"POST {path} -> {resp.status}: {body}")
        return [p["id"] for p in body["result"]["points"]]

    def raw_grpc(i: int) -> list[Any]:
        return [p.id.num for p in stub.Query(reqs[i], timeout=60).result]

    def client_grpc(i: int) -> Any:
        return g.query_points(COLL, query=qlists[i], limit=LIMIT).points

    def client_rest(i: int) -> Any:
        return r.query_points(COLL, query=qlists[i], limit=LIMIT).points

    paths: dict[str, Callable[[int], Any]] = {
        "qdrant-client gRPC": client_grpc, "qdrant-client REST": client_rest,
        "raw gRPC stub": raw_grpc, "raw REST http.client": raw_rest}
    names = list(paths)
    for i in range(warmup):
        for fn in paths.values():
            fn(i % len(qs))
    times: dict[str, list[int]] = {k: [] for k in names}
    for i in range(len(qs)):
        k = i % len(names)
        for name in names[k:] + names[:k]:  # rotate who goes first
            t = time.perf_counter_ns()
            res = paths[name](i)
            times[name].append(time.perf_counter_ns() - t)
            if name == "raw gRPC stub":
                got["raw grpc"].append(res)
            elif name == "raw REST http.client":
                got["raw rest"].append(res)
    mismatches = sum(a != b for a, b in zip(got["raw grpc"], got["raw rest"], strict=True))
    conn.close()
    channel.close()
    g.close()
    r.close()
    return {k: stats(v) for k, v in times.items()}, mismatches


# ---- report ----------------------------------------------------------------------------------


def table(res: dict[str, Any]) -> str:
    lines = [f"Quiver gRPC vs REST: {res['n']:,} x {res['dim']} float32, Cosine, clustered; "
             f"load (upload_collection over gRPC, batch {res['batch']}) {res['load_s']:.1f} s "
             f"= {res['n'] / res['load_s']:,.0f} points/s; HNSW build "
             + (f"{res['index_s']:.1f} s" if res["index_s"] is not None else "not finished")
             + f" ({res['indexed']:,} vectors in HNSW, the rest searched exactly)",
             "",
             f"(a) single query, top-{LIMIT}, sequential, {res['queries']} queries after "
             f"{res['warmup']} warm-up each (paths interleaved)",
             f"{'path':24s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s}"]
    lat = res["latency"]
    for name, s in lat.items():
        lines.append(f"{name:24s} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f} {s['mean_ms']:8.3f}")
    for label, a, b in (("qdrant-client", "qdrant-client REST", "qdrant-client gRPC"),
                        ("raw", "raw REST http.client", "raw gRPC stub")):
        lines.append(f"{label + ' REST / gRPC':24s} "
                     f"{lat[a]['p50_ms'] / lat[b]['p50_ms']:8.2f} "
                     f"{lat[a]['p99_ms'] / lat[b]['p99_ms']:8.2f} "
                     f"{lat[a]['mean_ms'] / lat[b]['mean_ms']:8.2f}")
    lines.append(f"client overhead (p50, client - raw): gRPC "
                 f"{lat['qdrant-client gRPC']['p50_ms'] - lat['raw gRPC stub']['p50_ms']:.3f} "
                 f"ms, REST "
                 f"{lat['qdrant-client REST']['p50_ms'] - lat['raw REST http.client']['p50_ms']:.3f}"
                 f" ms; raw top-{LIMIT} id lists differing: {res['top_mismatches']}")
    lines += ["", f"(b) bulk upsert, one client, batch {res['batch']}, wait=true, HNSW off",
              f"{'method':20s} {'points':>8s} {'gRPC pts/s':>12s} {'REST pts/s':>12s} "
              f"{'gRPC/REST':>10s}"]
    for method in ("upload_collection", "upload_points"):
        gr, re_ = res["bulk"][f"{method}/grpc"], res["bulk"][f"{method}/rest"]
        lines.append(f"{method:20s} {gr['points']:8,d} {gr['points_per_s']:12,.0f} "
                     f"{re_['points_per_s']:12,.0f} "
                     f"{gr['points_per_s'] / re_['points_per_s']:10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k points, 200 queries (<= 60 s)")
    ap.add_argument("--n", type=int, help="points (default 100000; --quick 10000)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, help="timed queries per path (default 1000; "
                                                "--quick 200)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--batch", type=int, default=256, help="upload batch size (both transports)")
    ap.add_argument("--points-n", type=int, help="points for upload_points (default n / 5)")
    ap.add_argument("--index-wait", type=float, default=600, help="max seconds for HNSW")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    n = args.n or (10_000 if args.quick else 100_000)
    m = args.queries or (200 if args.quick else 1000)
    points_n = min(n, args.points_n or max(1, n // 5))
    x = data.points(n, args.dim)
    qs = data.queries(m, args.dim)
    res: dict[str, Any] = {"n": n, "dim": args.dim, "queries": m, "warmup": args.warmup,
                           "batch": args.batch, "quick": args.quick}
    with Server(grpc=True) as srv:
        progress(f"server on :{srv.port} (gRPC :{srv.grpc_port}); {n:,} x {args.dim}")
        res["bulk"] = bulk(srv, x, args.batch, points_n)
        g, r = clients(srv)
        create(r, COLL, args.dim, hnsw=True, n=n)
        t = time.perf_counter()
        g.upload_collection(COLL, vectors=x, payload=data.payloads(0, n), ids=range(n),
                            batch_size=args.batch, parallel=1, wait=True)
        res["load_s"] = time.perf_counter() - t
        progress(f"loaded {n:,} points over gRPC in {res['load_s']:.1f} s")
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            res["index_s"], res["indexed"] = wait_indexed(http, COLL, n, args.index_wait)
        progress(f"indexer done {res['index_s'] or float('nan'):.1f} s after the load, "
                 f"{res['indexed']:,} vectors in HNSW")
        g.close()
        r.close()
        res["latency"], res["top_mismatches"] = latency(srv, qs, args.warmup)
    print(table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
