"""Profile a Quiver server under one benchmark load, with py-spy and/or perf.

    .venv/bin/python -m bench.profile query      --n 100000 --tool both
    .venv/bin/python -m bench.profile filtered   --n 100000
    .venv/bin/python -m bench.profile ingest     --n 100000
    .venv/bin/python -m bench.profile ingest_qc  --n 100000   # qdrant-client upsert (client too)
    .venv/bin/python -m bench.profile query --server-env OMP_NUM_THREADS=1   # try a fix

The server is started here (as bench.foundation does), loaded, and profiled while the same
single client keeps it busy. py-spy gives Python stacks per thread (sampled without pausing
the process, so timings stay close to the unprofiled run); perf gives native CPU time per
thread and shared library (what py-spy cannot see: OpenMP/BLAS threads). Summaries are
printed and written to bench/results/profiles/.

Needs py-spy (`pip install py-spy`) and/or perf (linux-perf) on PATH or next to python.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import data
from bench.foundation import (
    COLL,
    FILTER,
    RawQuery,
    create_collection,
    ingest_qdrant_client,
    ingest_raw,
    lat_stats,
    timed_loop,
)
from bench.server import Server
from bench.sysload import foreign_load, read_stat, snapshot

OUT_DIR = Path(__file__).resolve().parent / "results" / "profiles"


def _tool(name: str) -> str | None:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else shutil.which(name)


def summarise_pyspy(path: str, top: int = 25) -> str:
    """Collapsed stacks → share of wall time per thread, and inclusive/self function shares
    inside the busiest non-idle thread(s)."""
    per_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    self_t: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in open(path):
        line = line.rstrip()
        if not line:
            continue
        stack, _, cnt_s = line.rpartition(" ")
        cnt = int(cnt_s)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else frames[0]
        totals[thread] += cnt
        for f in dict.fromkeys(frames[1:]):
            per_thread[thread][f] += cnt
        self_t[thread][frames[-1]] += cnt
    lines = []
    for thread, total in totals.most_common():
        lines.append(f"\n## thread {thread}: {total} samples (100% = this thread's wall time)")
        lines.append("   inclusive:")
        for f, c in per_thread[thread].most_common(top):
            lines.append(f"   {c / total:6.1%}  {f}")
        lines.append("   self (leaf):")
        for f, c in self_t[thread].most_common(12):
            lines.append(f"   {c / total:6.1%}  {f}")
    return "\n".join(lines)


def summarise_perf(data_path: str, perf: str, top: int = 30) -> str:
    out = subprocess.run([perf, "report", "-i", data_path, "--no-children", "--sort",
                          "pid,dso,sym", "--stdio", "-g", "none"], capture_output=True,
                         text=True, timeout=300).stdout
    rows = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("#")]
    by_thread_dso: collections.Counter[tuple[str, str]] = collections.Counter()
    for ln in rows:
        parts = ln.split()
        try:
            pct = float(parts[0].rstrip("%"))
        except (ValueError, IndexError):
            continue
        by_thread_dso[(parts[1], parts[2])] += pct
    lines = ["   per thread and library (% of all server CPU samples):"]
    for (tid, dso), pct in by_thread_dso.most_common(15):
        lines.append(f"   {pct:6.2f}%  {tid:<22} {dso}")
    lines.append("   top symbols:")
    lines.extend("   " + ln.strip() for ln in rows[:top])
    return "\n".join(lines)


def per_thread_cpu(pid: int) -> dict[str, float]:
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = read_stat(f"/proc/{pid}/task/{tid}/stat")
        if stat is not None:
            comm, rest = stat
            out[f"{tid}:{comm}"] = (int(rest[11]) + int(rest[12])) / tick
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["query", "filtered", "ingest", "ingest_qc"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--tool", choices=["py-spy", "perf", "both"], default="both")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--client", action="store_true",
                    help="also py-spy this (client) process, e.g. for ingest_qc")
    args = ap.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.server_env)
    pyspy = _tool("py-spy") if args.tool in ("py-spy", "both") else None
    perf = _tool("perf") if args.tool in ("perf", "both") else None
    if args.tool in ("py-spy", "both") and not pyspy:
        print("py-spy not found (pip install py-spy)", file=sys.stderr)
    if args.tool in ("perf", "both") and not perf:
        print("perf not found", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="quiver-prof-"))
    x = data.points(args.n)
    q = data.queries(500)
    report: list[str] = [f"# profile {args.scenario}, n={args.n}, server env {env or '{}'}, "
                         f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"]
    with Server(env=env) as srv, httpx.Client(base_url=srv.url, timeout=300) as http:
        create_collection(http, COLL, data.DIM)
        load: Any
        if args.scenario in ("query", "filtered"):
            ingest_raw(http, COLL, x, "batch", "ingest", srv.pid)
            time.sleep(6.5)  # idle flush
            rq = RawQuery(http, COLL, q, FILTER if args.scenario == "filtered" else None)
            base = lat_stats(timed_loop(rq, 300, len(q)))
            report.append(f"unprofiled: p50 {base['p50_ms']:.2f} ms, p99 {base['p99_ms']:.2f} ms, "
                          f"server handler p50 {np.median(rq.server_s[-300:]) * 1e3:.2f} ms")
            lat: list[int] = []

            def load() -> str:
                i = 0
                t_end = time.monotonic() + args.seconds
                while time.monotonic() < t_end:
                    t = time.perf_counter_ns()
                    rq(i % len(q))
                    lat.append(time.perf_counter_ns() - t)
                    i += 1
                s = lat_stats(lat)
                return (f"profiled: {len(lat)} queries, p50 {s['p50_ms']:.2f} ms, p99 "
                        f"{s['p99_ms']:.2f} ms, server handler p50 "
                        f"{np.median(rq.server_s[-len(lat):]) * 1e3:.2f} ms")
        else:
            reps = max(1, int(args.seconds * 30_000 / args.n) + 1)
            if args.scenario == "ingest_qc":
                from qdrant_client import QdrantClient  # noqa: PLC0415 - import before sampling

            def load() -> str:
                figs = []
                for r in range(reps):
                    name = f"{COLL}_{r}"
                    create_collection(http, name, data.DIM)
                    if args.scenario == "ingest":
                        res = ingest_raw(http, name, x, "batch", "ingest", srv.pid)
                    else:
                        c = QdrantClient(url=srv.url, timeout=300, check_compatibility=False)
                        try:
                            res = ingest_qdrant_client(c, name, x, "ingest", srv.pid)
                        finally:
                            c.close()
                    figs.append(res)
                    http.delete(f"/collections/{name}")
                pps = [f"{f['points_per_s']:,.0f}" for f in figs]
                cpu = [f"{f['client_cpu_s'] / f['wall_s']:.2f}/"
                       f"{f['server_cpu_s'] / f['wall_s']:.2f}" for f in figs]
                return f"profiled: points/s {pps}; client/server cores {cpu}"

        procs = []
        spy_out = tmp / "pyspy.txt"
        perf_out = tmp / "perf.data"
        dur = str(int(args.seconds + 60))
        if pyspy:
            procs.append(subprocess.Popen(
                [pyspy, "record", "--pid", str(srv.pid), "--format", "raw", "-o", str(spy_out),
                 "--rate", str(args.rate), "--threads", "--idle", "--nonblocking",
                 "--duration", dur], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        client_out = tmp / "pyspy-client.txt"
        if pyspy and args.client:
            procs.append(subprocess.Popen(
                [pyspy, "record", "--pid", str(os.getpid()), "--format", "raw", "-o",
                 str(client_out), "--rate", str(args.rate), "--threads", "--nonblocking",
                 "--duration", dur], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        if perf:
            procs.append(subprocess.Popen(
                [perf, "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(srv.pid),
                 "-o", str(perf_out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(1.5)
        cpu0 = per_thread_cpu(srv.pid)
        snap0 = snapshot()
        t0 = time.monotonic()
        report.append(load())
        wall = time.monotonic() - t0
        fl = foreign_load(snap0, snapshot())
        cpu1 = per_thread_cpu(srv.pid)
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
        report.append(f"other processes used {fl['foreign_cores']:.2f} cores meanwhile"
                      + (" (NOISY)" if fl["foreign_cores"] >= 0.1 else ""))
        report.append(f"\n## server CPU per thread over {wall:.1f}s of load (cores):")
        for k in sorted(cpu1, key=lambda k: -(cpu1[k] - cpu0.get(k, 0.0))):
            d = cpu1[k] - cpu0.get(k, 0.0)
            if d > 0.005 * wall:
                report.append(f"   {d / wall:5.2f}  {k}")
    if pyspy and spy_out.exists():
        report.append("\n# py-spy (Python stacks; nonblocking)")
        report.append(summarise_pyspy(str(spy_out)))
    if pyspy and args.client and client_out.exists():
        report.append("\n# py-spy of the CLIENT (benchmark) process, active samples only")
        report.append(summarise_pyspy(str(client_out)))
    if perf and perf_out.exists():
        report.append("\n# perf (native CPU samples, cpu-clock)")
        report.append(summarise_perf(str(perf_out), perf))
    text = "\n".join(report)
    print(text)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    env_tag = "-" + "-".join(f"{k}={v}" for k, v in env.items()) if env else ""
    stamp = f"{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}"
    dest = OUT_DIR / f"{stamp}-{args.scenario}-{args.n}{env_tag}.txt"
    dest.write_text(text + "\n")
    print(f"\nwritten: {dest}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
