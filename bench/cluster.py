"""Cluster mode on one box: the router's cost per query, and replicated upserts.

    .venv/bin/python -m bench.cluster                     # 20000 × 128-d, 400 query rounds
    .venv/bin/python -m bench.cluster --n 5000 --rounds 100   # a short run while developing
    .venv/bin/python -m bench.cluster --json out.json     # default: bench/results/<date>-cluster.json
    .venv/bin/python -m bench.cluster --sizes 20000,80000,160000   # + c4/single per size

Two servers on loopback, each a subprocess (bench.server.Server): a single node, and a front end
in cluster mode (joined to the Ray instance this process starts, every shard replica an actor
on this box). The same random points go into
- `single`: one single-node collection;
- `c1`: a cluster collection with 1 shard × 1 replica (one hop: front end → actor → back);
- `c4`: 4 shards × 1 replica (scatter to 4 actors, exact merge of their top-k);
- `r1`, `r2`: 2 shards with replication_factor 1 and 2, for upsert throughput.
Query rows: top-10 `POST /points/query` on one keep-alive http.client connection, the rows
interleaved round by round (the order rotates) so a busy machine slows all alike; p50/p99.
Upsert rows: batches of 100 new points, `wait=true`, interleaved; points per second.
- `floor1`, `floor4`: an empty Ray actor method called from this process (a driver, as the
  front end is) on 1 and on 4 actors at once: Ray's fixed cost per hop in the same run, which
  no router change removes. The bench starts Ray itself and the front end joins it
  (`cluster.ray_address` = its address), so both use the one Ray instance.
Target (issue 17): p50(c4) / p50(single) ≤ 1.5. `--sizes` repeats the single / c4 / floor
rows for other collection sizes (fresh collections) to show where the ratio crosses 1.5.
Figures only; nothing is asserted.
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


class _Empty:
    """The floor rows' actor: a method that does nothing."""

    def ping(self) -> bool:
        return True


def _queries(rows: dict[str, Any], rounds: int, seed: int) -> dict[str, list[float]]:
    """Every row once per round, the order rotating; the first 20 rounds warm up. A row is
    (Conn, collection) for a query, or a callable (the floor rows)."""
    rng = np.random.default_rng(seed)
    lat: dict[str, list[float]] = {k: [] for k in rows}
    order = list(rows)
    for i in range(rounds + 20):
        q = orjson.dumps({"query": rng.standard_normal(DIM).tolist(), "limit": 10})
        k = i % len(order)
        for key in order[k:] + order[:k]:
            row = rows[key]
            t0 = time.perf_counter()
            if callable(row):
                row()
            else:
                got = row[0].call("POST", f"/collections/{row[1]}/points/query", q)
                assert len(got["points"]) == 10
            dt = time.perf_counter() - t0
            if i >= 20:
                lat[key].append(dt)
    return lat


def _floor_rows(ray: Any) -> dict[str, Any]:
    cls = ray.remote(_Empty)
    one, four = cls.options(num_cpus=0).remote(), [cls.options(num_cpus=0).remote()
                                                    for _ in range(4)]
    ray.get([one.ping.remote()] + [a.ping.remote() for a in four])
    return {"floor1": lambda: ray.get(one.ping.remote()),
            "floor4": lambda: ray.get([a.ping.remote() for a in four])}


def _indexed(conn: Conn, name: str) -> int:
    return int(conn.call("GET", f"/collections/{name}", None).get("indexed_vectors_count") or 0)


def _settle(conn: Conn, name: str, timeout: float = 300.0) -> None:
    """Until the collection's optimizers are done (status green, the indexed count stable), so
    that a size row measures the index it will have, not a scan while it is being built."""
    deadline, last = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        info = conn.call("GET", f"/collections/{name}", None)
        now = int(info.get("indexed_vectors_count") or 0)
        if info.get("status") == "green" and now == last:
            return
        last = now
        time.sleep(1.0)


def run(n: int, rounds: int, upserts: int, sizes: list[int] | None = None) -> dict[str, Any]:
    import ray  # noqa: PLC0415 - the cluster extra

    tmp = Path(tempfile.mkdtemp(prefix="quiver-bench-cluster-"))
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
             log_to_driver=False, namespace=f"benchfloor{os.getpid()}")
    single = Server(tmp / "single").start()
    cluster = Server(tmp / "cluster", env={
        "QUIVER__CLUSTER__ENABLED": "true",
        "QUIVER__CLUSTER__RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "QUIVER__CLUSTER__NAMESPACE": f"bench{os.getpid()}"}).start(timeout=300)
    print(f"front end pid {cluster.pid}", flush=True)  # for py-spy
    sweep: dict[int, dict[str, Any]] = {}
    try:
        s, c = Conn(single.url), Conn(cluster.url)
        vec = {"vectors": {"size": DIM, "distance": "Cosine"}}
        _load(s, "single", vec, n, 1)
        _load(c, "c1", {**vec, "shard_number": 1}, n, 1)
        _load(c, "c4", {**vec, "shard_number": 4}, n, 1)
        for name, rf in (("r1", 1), ("r2", 2)):
            c.call("PUT", f"/collections/{name}", orjson.dumps(
                {**vec, "shard_number": 2, "replication_factor": rf}))
        floor = _floor_rows(ray)
        lat = _queries({"single": (s, "single"), "c1": (c, "c1"), "c4": (c, "c4"), **floor},
                       rounds, 7)
        indexed = {"single": _indexed(s, "single"), "c4": _indexed(c, "c4")}
        for m in sizes or []:
            _load(s, f"single_{m}", vec, m, 2)
            _load(c, f"c4_{m}", {**vec, "shard_number": 4}, m, 2)
            _settle(s, f"single_{m}")
            _settle(c, f"c4_{m}")
            got = _queries({"single": (s, f"single_{m}"), "c4": (c, f"c4_{m}"), **floor},
                           rounds, 8)
            p = {k: _pct(v, 50) for k, v in got.items()}
            sweep[m] = {"p50_ms": p, "ratio_c4_vs_single": p["c4"] / p["single"],
                        "indexed": {"single": _indexed(s, f"single_{m}"),
                                    "c4": _indexed(c, f"c4_{m}")}}
            print(f"size {m:8d}: single {p['single']:6.2f} ms, c4 {p['c4']:6.2f} ms "
                  f"({p['c4'] / p['single']:.2f}×), floor4 {p['floor4']:.2f} ms", flush=True)
            for name in (f"single_{m}",):
                s.call("DELETE", f"/collections/{name}", None)
            c.call("DELETE", f"/collections/c4_{m}", None)
        rng = np.random.default_rng(7)
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
        ray.shutdown()
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
        "floor_ms": {"one_actor": p50["floor1"], "four_actors": p50["floor4"]},
        "indexed_vectors": indexed,
        "sizes": {str(m): v for m, v in sweep.items()},
        "ratio_crosses_target_at": next((m for m, v in sorted(sweep.items())
                                         if v["ratio_c4_vs_single"] <= TARGET_C4), None),
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
    ap.add_argument("--sizes", default="",
                    help="comma-separated collection sizes: single / c4 / floor rows each")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    out = run(args.n, args.rounds, args.upserts, sizes)
    for k, v in out["query_ms"].items():
        print(f"query {k:7s} p50 {v['p50']:7.2f} ms  p99 {v['p99']:7.2f} ms")
    print(f"c4/single p50 {out['ratio_c4_vs_single']:.2f}× (target ≤ {TARGET_C4}) "
          f"{'PASS' if out['pass'] else 'FAIL'}; one hop {out['hop_ms']:.2f} ms; "
          f"4-shard fan-out +{out['fanout_extra_ms_4_shards']:.2f} ms")
    fl = out["floor_ms"]
    print(f"floor: empty actor call {fl['one_actor']:.2f} ms, on 4 actors at once "
          f"{fl['four_actors']:.2f} ms; indexed vectors {out['indexed_vectors']}")
    if sizes:
        print(f"c4/single ≤ {TARGET_C4} first at size {out['ratio_crosses_target_at']}")
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
