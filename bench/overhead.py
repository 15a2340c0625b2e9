"""HTTP request overhead: Quiver against a bare ASGI app under the same uvicorn settings.

    .venv/bin/python -m bench.overhead                 # 2000 rounds (~1 min)
    .venv/bin/python -m bench.overhead --rounds 300    # a short run while developing
    .venv/bin/python -m bench.overhead --json out.json # default: bench/results/<date>-overhead.json
    .venv/bin/python -m bench.overhead --rows healthz,query  # a subset of the rows

Two servers on loopback, each a subprocess: `quiver serve` (bench.server.Server: default
configuration, access log on, WAL fsync on) and the bare app below, run by `uvicorn.run` with
the arguments `quiver serve` passes (api/cli.py: log_level warning, access_log off, uvicorn's
auto loop and HTTP parser, so uvloop and httptools where installed). The bare app reads the
request body and answers a fixed body of the same kind (plain text for /healthz, a small JSON
envelope otherwise): what any HTTP service pays, with nothing of Quiver's.

Rows, each on one keep-alive `http.client` connection per server (httpx alone adds ~0.6 ms a
call), bodies serialised before timing:
- `GET /healthz`;
- `POST /collections/q10/points/query`, top-10 on a 10-point collection (128-d, Cosine);
- `PUT /collections/u100/points?wait=true`, 100 points overwriting the same ids (WAL fsync on:
  this row is dominated by the disk, no target).
Each row runs in its own phase, its rounds alternating the two servers (who goes first
alternates too), so a busy machine slows both alike. `--mixed` interleaves the rows as well
(the order of all row × server pairs rotates each round), as this bench did before
2026-12-05: on this VM it measures a cross-server effect rather than either server. There,
the bare app answers /healthz ~20 % faster when Quiver served a query just before, while
two bare apps under the same mixed schedule answer alike: a vCPU kept busy by one server
wakes the other sooner. Reports p50/p99 per row and server, Quiver / bare ratios,
PASS/FAIL against TARGETS (p50 ratio). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench import data
from bench.server import ROOT, Server, free_port

# p50(Quiver) / p50(bare app): issue 16's request-overhead item (bench/suite.py TARGETS
# overhead_healthz_vs_bare, overhead_query10_vs_bare)
TARGETS = {"healthz": 1.2, "query": 1.8}
DIM = 128
RESULTS = ROOT / "bench" / "results"
# what api/cli.py passes to uvicorn.run besides the app, host and port
UVICORN_KW: dict[str, Any] = {"log_level": "warning", "access_log": False,
                              "timeout_graceful_shutdown": 30}

_HEALTH = b"healthz check passed"
_JSON = b'{"result":{"points":[]},"status":"ok","time":0.0}'


async def bare_app(scope: dict[str, Any], receive: Callable[..., Any],
                   send: Callable[..., Any]) -> None:
    """The peer: a raw ASGI callable that reads the body and answers a constant."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    text = scope["path"] in ("/healthz", "/readyz")
    body = _HEALTH if text else _JSON
    ctype = b"text/plain; charset=utf-8" if text else b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Bare:
    """The bare app in a subprocess (`python -m bench.overhead --serve-bare PORT`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Bare:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.overhead", "--serve-bare",
                                      str(self.port)], cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("bare app did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def serve_bare(port: int) -> None:
    import uvicorn  # noqa: PLC0415

    uvicorn.run(bare_app, host="127.0.0.1", port=port, **UVICORN_KW)


# ---- measuring -------------------------------------------------------------------------------


def setup(url: str) -> None:
    x = data.points(10, DIM)
    with httpx.Client(base_url=url, timeout=60) as c:
        for name in ("q10", "u100"):
            c.put(f"/collections/{name}",
                  json={"vectors": {"size": DIM, "distance": "Cosine"}}).raise_for_status()
        c.put("/collections/q10/points?wait=true",
              json={"points": [{"id": i, "vector": v.tolist(), "payload": {"n": i}}
                               for i, v in enumerate(x)]}).raise_for_status()


def requests() -> dict[str, tuple[str, str, bytes | None]]:
    q = data.queries(1, DIM)[0]
    x = data.points(100, DIM)
    upsert = orjson.dumps({"points": [{"id": i, "vector": v.tolist(), "payload": {"n": i}}
                                      for i, v in enumerate(x)]})
    return {"healthz": ("GET", "/healthz", None),
            "query": ("POST", "/collections/q10/points/query",
                      orjson.dumps({"query": q.tolist(), "limit": 10})),
            "upsert100": ("PUT", "/collections/u100/points?wait=true", upsert)}


def call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> int:
    headers = {"content-type": "application/json"} if body is not None else {}
    t = time.perf_counter_ns()
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    elapsed = time.perf_counter_ns() - t
    if resp.status != 200:
        raise RuntimeError(f"{method} {path} -> {resp.status}: {payload[:300]!r}")
    return elapsed


def stats(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {"count": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def measure(ports: dict[str, int], rounds: int, warmup: int,
            only: list[str] | None = None, mixed: bool = False) -> dict[str, Any]:
    reqs = {r: v for r, v in requests().items() if not only or r in only}
    conns = {s: http.client.HTTPConnection("127.0.0.1", p, timeout=60) for s, p in ports.items()}
    times: dict[str, dict[str, list[int]]] = {r: {s: [] for s in conns} for r in reqs}
    phases = [list(reqs)] if mixed else [[r] for r in reqs]
    for rows in phases:
        order = [(s, r) for r in rows for s in conns]
        for i in range(warmup + rounds):
            k = i % len(order)
            for server, row in order[k:] + order[:k]:  # rotate who goes first
                t = call(conns[server], *reqs[row])
                if i >= warmup:
                    times[row][server].append(t)
    for c in conns.values():
        c.close()
    out: dict[str, Any] = {}
    for row, by in times.items():
        st = {s: stats(v) for s, v in by.items()}
        st["ratio_p50"] = st["quiver"]["p50_ms"] / st["bare"]["p50_ms"]
        st["ratio_p99"] = st["quiver"]["p99_ms"] / st["bare"]["p99_ms"]
        if row in TARGETS:
            st["target"] = TARGETS[row]
            st["pass"] = st["ratio_p50"] <= TARGETS[row]
        out[row] = st
    return out


def table(res: dict[str, Any]) -> str:
    lines = [f"HTTP overhead, one keep-alive http.client connection per server, "
             f"{res['rounds']} interleaved rounds after {res['warmup']} warm-up "
             f"({res.get('schedule', 'mixed')}); "
             f"load before {res['load_before']}",
             f"{'row':10s} {'bare p50':>9s} {'p99':>7s} {'quiver p50':>11s} {'p99':>7s} "
             f"{'ratio p50':>10s} {'p99':>6s}  target"]
    for row, st in res["rows"].items():
        verdict = (f"<= {st['target']}x {'PASS' if st['pass'] else 'FAIL'}" if "target" in st
                   else "-")
        lines.append(f"{row:10s} {st['bare']['p50_ms']:9.3f} {st['bare']['p99_ms']:7.3f} "
                     f"{st['quiver']['p50_ms']:11.3f} {st['quiver']['p99_ms']:7.3f} "
                     f"{st['ratio_p50']:10.2f} {st['ratio_p99']:6.2f}  {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--json", help="where to write the figures (default bench/results/...)")
    ap.add_argument("--rows", help="comma-separated subset of the rows (default: all): "
                    "healthz, query, upsert100")
    ap.add_argument("--mixed", action="store_true",
                    help="interleave the rows too, not only the servers (see above)")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for quiver serve")
    ap.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return {}
    env = dict(kv.split("=", 1) for kv in args.server_env)
    res: dict[str, Any] = {"rounds": args.rounds, "warmup": args.warmup, "dim": DIM,
                           "schedule": "mixed" if args.mixed else "per-row",
                           "targets": TARGETS, "uvicorn": UVICORN_KW, "server_env": env,
                           "load_before": os.getloadavg()[0], "machine": platform.node(),
                           "cpus": os.cpu_count()}
    with Server(env=env) as srv, Bare() as bare:
        setup(srv.url)
        res["rows"] = measure({"bare": bare.port, "quiver": srv.port}, args.rounds, args.warmup,
                              args.rows.split(",") if args.rows else None, args.mixed)
    res["load_after"] = os.getloadavg()[0]
    print(table(res))
    path = Path(args.json) if args.json else RESULTS / f"{date.today()}-overhead.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
