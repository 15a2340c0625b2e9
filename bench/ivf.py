"""IVF benchmark: recall@10 and QPS of Quiver's FAISS IVF segment indexes (engine/ivf.py,
the call engine.search makes per segment) against faiss IndexIVFFlat used directly on the
same data, with the same nlist / nprobe and threads, plus exact search (faiss IndexFlat),
all in the same run, interleaved pass by pass so machine noise hits every engine alike.

    .venv/bin/python -m bench.ivf --quick            # 20k x 64, a few seconds
    .venv/bin/python -m bench.ivf --n 200000 --dim 128 --kinds ivf_flat,ivf_pq [--gpu]
    .venv/bin/python -m bench.ivf --gpu --kinds ivf_flat,cagra   (a FAISS GPU build)

Figures are reported, never asserted; `--out` writes them as JSON. `main(argv)` returns them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine import ivf


def _data(n: int, dim: int, nq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (inner product = Cosine), queries drawn like the data."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(8, n // 500), dim)).astype(np.float32)
    pick = rng.integers(0, len(centers), n + nq)
    x = centers[pick] + 0.5 * rng.standard_normal((n + nq, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


def _recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b)
                          for a, b in zip(rows, truth, strict=True)]))


def _timed(fn: Any, q: np.ndarray, single: bool) -> tuple[float, np.ndarray]:
    """Seconds for all queries (one call each in single mode, one batch otherwise)."""
    t = time.perf_counter()
    if single:
        rows = np.concatenate([fn(q[i : i + 1]) for i in range(len(q))])
    else:
        rows = fn(q)
    return time.perf_counter() - t, rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.ivf", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k x 64, 200 queries")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--kinds", default="ivf_flat", help="comma-separated: ivf_flat,ivf_pq,cagra")
    ap.add_argument("--nprobe", default="8,32", help="comma-separated nprobe values")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved passes (best kept)")
    ap.add_argument("--gpu", action="store_true", help="train and search on the GPU")
    ap.add_argument("--out", type=str, help="JSON path")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.dim, args.queries = 20_000, 64, 200
    faiss = ivf.faiss
    gpu = args.gpu and ivf.faiss_gpus() > 0
    if args.gpu and not gpu:
        print("SKIP: --gpu asked but faiss has no GPU (faiss.get_num_gpus() == 0)", flush=True)
    x, q = _data(args.n, args.dim, args.queries)
    k = 10
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(x)
    truth = flat.search(q, k)[1]
    out: dict[str, Any] = {"n": args.n, "dim": args.dim, "queries": args.queries, "gpu": gpu,
                           "faiss": faiss.__version__, "rows": []}
    for kind in [s for s in args.kinds.split(",") if s]:
        if kind == "cagra" and not gpu:
            print("SKIP: cagra needs a FAISS GPU build", flush=True)
            continue
        for nprobe in [int(v) for v in args.nprobe.split(",")]:
            spec = ivf.IvfSpec(kind, nprobe=nprobe, gpu=gpu)
            t = time.perf_counter()
            quiver = ivf.IvfIndex.build(x, "ip", spec)
            build_s = time.perf_counter() - t
            peers: dict[str, Any] = {
                "quiver": lambda qq, ix=quiver, ef=nprobe * 4: ix.search(qq, k, ef, None)[1],
                "exact": lambda qq: flat.search(qq, k)[1]}
            if kind == "ivf_flat":  # the peer: faiss IVF-Flat, built and searched directly
                direct = faiss.IndexIVFFlat(faiss.IndexFlatIP(args.dim), args.dim,
                                            quiver.nlist, faiss.METRIC_INNER_PRODUCT)
                if gpu:
                    direct = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, direct)
                direct.train(x)
                direct.add(x)
                direct.nprobe = nprobe
                peers["faiss"] = lambda qq, ix=direct: ix.search(qq, k)[1]
            for single in (False, True):
                best: dict[str, float] = {}
                recall: dict[str, float] = {}
                for _ in range(args.repeats):  # interleaved: every engine once per pass
                    for name, fn in peers.items():
                        secs, rows = _timed(fn, q, single)
                        best[name] = min(best.get(name, secs), secs)
                        recall[name] = _recall(rows, truth)
                for name in peers:
                    row = {"kind": kind, "nprobe": nprobe, "nlist": quiver.nlist,
                           "mode": "single" if single else "batch", "engine": name,
                           "recall@10": round(recall[name], 4),
                           "qps": round(len(q) / best[name], 1),
                           "build_s": round(build_s, 2) if name == "quiver" else None}
                    out["rows"].append(row)
                    print(json.dumps(row), flush=True)
                ratio = best.get("faiss", 0) / best["quiver"] if "faiss" in best else None
                if ratio:
                    print(f"  quiver/faiss QPS ratio ({kind}, nprobe={nprobe}, "
                          f"{'single' if single else 'batch'}): {ratio:.2f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
