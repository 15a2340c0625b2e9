"""Cluster mode on one box: the router's cost per query, and replicated upserts.

    .venv/bin/python -m bench.cluster                     # 20000 × 128-d, 400 query rounds
    .venv/bin/python -m bench.cluster --n 5000 --rounds 100   # a short run while developing
    .venv/bin/python -m bench.cluster --json out.json     # default: bench/results/<date>-cluster.json

Two servers on loopback, each a subprocess (bench.server.Server): a single node, and a front end
in cluster mode (`cluster.ray_address: local`: Ray started inside it, every shard replica an
actor on this box). The same random points go into
- `single`: one single-node collection;
- `c1`: a cluster collection with 1 shard × 1 replica (one hop: front end → actor → back);
- `c4`: 4 shards × 1 replica (scatter to 4 actors, exact merge of their top-k);
- `r1`, `r2`: 2 shards with replication_factor 1 and 2, for upsert throughput.
Query rows: top-10 `POST /points/query` on one keep-alive http.client connection, the rows
interleaved round by round (the order rotates) so a busy machine slows all alike; p50/p99.
Upsert rows: batches of 100 new points, `wait=true`, interleaved; points per second.
Target (issue 17): p50(c4) / p50(single) ≤ 1.5. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.server import ROOT, Server

TARGET_C4 = 1.5
DIM = 128
RESULTS = ROOT / "bench" / "results"


class Conn:
    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.addr = (host, int(port))
        self.c = http.client.HTTPConnection(*self.addr, timeout=300)

    def call(self, method: str, path: str, body: bytes | None) -> Any:
        for attempt in (0, 1):
            try:
                self.c.request(method, path, body=body,
                               headers={"content-type": "application/json"})
                r = self.c.getresponse()
                break
            except (ConnectionError, http.client.HTTPException):
                if attempt:
                    raise
                # idle past the server's keep-alive timeout (while the other server loaded)
                self.c.close()
                self.c = http.client.HTTPConnection(*self.addr, timeout=300)
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        return orjson.loads(data)["result"]


def _points(rng: np.random.Generator, first: int, n: int) -> bytes:
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    return orjson.dumps({"batch": {"ids": list(range(first, first + n)),
                                   "vectors": vecs.tolist()}})


def _load(conn: Conn, name: str, body: dict[str, Any], n: int, seed: int) -> None:
    conn.call("PUT", f"/collections/{name}", orjson.dumps(body))
    rng = np.random.default_rng(seed)
    for k in range(0, n, 1000):
        conn.call("PUT", f"/collections/{name}/points?wait=true",
                  _points(rng, k, min(1000, n - k)))


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


def run(n: int, rounds: int, upserts: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="quiver-bench-cluster-"))
    single = Server(tmp / "single").start()
    cluster = Server(tmp / "cluster", env={
        "QUIVER__CLUSTER__ENABLED": "true", "QUIVER__CLUSTER__RAY_ADDRESS": "local",
        "QUIVER__CLUSTER__NAMESPACE": f"bench{os.getpid()}",
        "QUIVER__CLUSTER__NUM_CPUS": str(max(2, os.cpu_count() or 2))}).start(timeout=300)
    try:
        s, c = Conn(single.url), Conn(cluster.url)
        vec = {"vectors": {"size": DIM, "distance": "Cosine"}}
        _load(s, "single", vec, n, 1)
        _load(c, "c1", {**vec, "shard_number": 1}, n, 1)
        _load(c, "c4", {**vec, "shard_number": 4}, n, 1)
        for name, rf in (("r1", 1), ("r2", 2)):
            c.call("PUT", f"/collections/{name}", orjson.dumps(
                {**vec, "shard_number": 2, "replication_factor": rf}))
        rng = np.random.default_rng(7)
        rows = {"single": (s, "single"), "c1": (c, "c1"), "c4": (c, "c4")}
        lat: dict[str, list[float]] = {k: [] for k in rows}
        order = list(rows)
        for i in range(rounds + 20):  # the first 20 rounds warm up
            q = orjson.dumps({"query": rng.standard_normal(DIM).tolist(), "limit": 10})
            for key in order[i % 3:] + order[:i % 3]:
                conn, name = rows[key]
                t0 = time.perf_counter()
                got = conn.call("POST", f"/collections/{name}/points/query", q)
                dt = time.perf_counter() - t0
                assert len(got["points"]) == 10
                if i >= 20:
                    lat[key].append(dt)
        spent = {"r1": 0.0, "r2": 0.0}
        for i in range(upserts):
            body = _points(rng, i * 100, 100)
            for name in (("r1", "r2") if i % 2 == 0 else ("r2", "r1")):
                t0 = time.perf_counter()
                c.call("PUT", f"/collections/{name}/points?wait=true", body)
                spent[name] += time.perf_counter() - t0
    finally:
        single.stop()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    p50 = {k: _pct(v, 50) for k, v in lat.items()}
    out = {
        "date": date.today().isoformat(), "machine": platform.node(),
        "cpus": os.cpu_count(), "n": n, "dim": DIM, "rounds": rounds,
        "query_ms": {k: {"p50": p50[k], "p99": _pct(v, 99)} for k, v in lat.items()},
        "ratio_c4_vs_single": p50["c4"] / p50["single"],
        "ratio_c1_vs_single": p50["c1"] / p50["single"],
        "hop_ms": p50["c1"] - p50["single"],
        "fanout_extra_ms_4_shards": p50["c4"] - p50["c1"],
        "upsert_points_per_s": {k: upserts * 100 / v for k, v in spent.items()},
        "target_c4_vs_single": TARGET_C4,
    }
    out["upsert_r2_vs_r1"] = out["upsert_points_per_s"]["r2"] / out["upsert_points_per_s"]["r1"]
    out["pass"] = out["ratio_c4_vs_single"] <= TARGET_C4
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--upserts", type=int, default=60, help="batches of 100 per collection")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    out = run(args.n, args.rounds, args.upserts)
    for k, v in out["query_ms"].items():
        print(f"query {k:7s} p50 {v['p50']:7.2f} ms  p99 {v['p99']:7.2f} ms")
    print(f"c4/single p50 {out['ratio_c4_vs_single']:.2f}× (target ≤ {TARGET_C4}) "
          f"{'PASS' if out['pass'] else 'FAIL'}; one hop {out['hop_ms']:.2f} ms; "
          f"4-shard fan-out +{out['fanout_extra_ms_4_shards']:.2f} ms")
    ups = out["upsert_points_per_s"]
    print(f"upsert rf1 {ups['r1']:.0f} pts/s, rf2 {ups['r2']:.0f} pts/s "
          f"({out['upsert_r2_vs_r1']:.2f}×)")
    dest = args.json or RESULTS / f"{out['date']}-cluster.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
