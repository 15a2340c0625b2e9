"""GPU benchmark: Quiver's device path against the roofline, torch, and its own CPU path.

    python -m bench.gpu [--n 1000000] [--dim 768] [--batch 1000] [--out results.json]

Needs only numpy and cupy (torch is used as a peer when importable). Measures, on the same
data in the same run:
- exact batch search (one GEMM per chunk + bucket-select top-k) vs the fp32 roofline, vs
  torch (mm + topk), vs Quiver's CPU path on a slice of the batch;
- single-query latency vs the memory-bandwidth bound (reading every vector once);
- float16 storage: the same batch;
- rehydration: a 3 GB vectors file in the page cache → device with gpu.transfer.fill, vs
  `cupy.asarray(np.fromfile(...))`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

import numpy as np

FP32_TFLOPS = {"H200": 67.0, "H100": 67.0, "A100": 19.5}  # dense fp32 (non-tensor) peaks
HBM_TBS = {"H200": 4.8, "H100": 3.35, "A100": 2.0}


def _sync() -> None:
    import cupy

    cupy.cuda.Device().synchronize()


def timed(fn: Any, repeat: int) -> list[float]:
    fn()
    _sync()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync()
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rehydrate-gb", type=float, default=3.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import cupy

    from gpu import flat, transfer
    from gpu.config import GpuConfig
    from gpu.device import default_device

    print(default_device().configure(GpuConfig(enabled="true")), flush=True)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    key = next((k for k in FP32_TFLOPS if k in name), None)
    res: dict[str, Any] = {"device": name, "n": args.n, "dim": args.dim, "batch": args.batch,
                           "k": args.k, "cupy": cupy.__version__, "numpy": np.__version__,
                           "python": platform.python_version(), "cores": os.cpu_count()}
    rng = np.random.default_rng(0)
    # clustered data: 1000 centres + noise, generated on the device (fast)
    crs = cupy.random.default_rng(0)
    centres = crs.standard_normal((1000, args.dim), dtype=cupy.float32)
    x = centres[crs.integers(0, 1000, args.n)] + 0.3 * crs.standard_normal(
        (args.n, args.dim), dtype=cupy.float32)
    x /= cupy.linalg.norm(x, axis=1, keepdims=True)
    q = (x[crs.integers(0, args.n, args.batch)]
         + 0.1 * crs.standard_normal((args.batch, args.dim), dtype=cupy.float32)).get()

    flops = 2.0 * args.batch * args.n * args.dim
    t = timed(lambda: flat.search(x, q, args.k, "ip"), 5)
    best = min(t)
    ideal = flops / (FP32_TFLOPS[key] * 1e12) if key else float("nan")
    res["exact_batch_ms"] = best * 1e3
    res["exact_batch_fp32_ideal_ms"] = ideal * 1e3
    res["exact_batch_roofline_fraction"] = ideal / best
    print(f"exact batch {args.batch}x{args.n}x{args.dim}: {best*1e3:.1f} ms "
          f"(fp32 ideal {ideal*1e3:.1f} ms -> {ideal/best:.0%} of roofline)", flush=True)

    step = max(4096, flat.SCORE_BYTES // (4 * args.batch))
    qd = cupy.asarray(q)

    def gemm_only() -> None:
        for s in range(0, args.n, step):
            qd @ x[s : s + step].T

    tg = min(timed(gemm_only, 5))
    res["gemm_only_ms"] = tg * 1e3
    res["selection_overhead_ms"] = (best - tg) * 1e3
    print(f"  of which GEMM alone {tg*1e3:.1f} ms ({ideal/tg:.0%} of roofline), selection + "
          f"transfers {(best - tg)*1e3:.1f} ms", flush=True)

    res["profile_batch_chunk"] = profile_select(x, q, args.k, step)
    res["profile_single"] = profile_select(x, q[:1], args.k, args.n)
    print("stage times (ms), one batch chunk:", {k: round(v, 3) for k, v in
                                                res["profile_batch_chunk"].items()}, flush=True)
    print("stage times (ms), single query:", {k: round(v, 3) for k, v in
                                             res["profile_single"].items()}, flush=True)

    try:
        import torch

        tx = torch.as_tensor(x, device="cuda")
        tq = torch.as_tensor(q, device="cuda")

        def torch_run() -> None:
            for s in range(0, args.n, 250_000):
                torch.topk(tq @ tx[s : s + 250_000].T, args.k, dim=1)
            torch.cuda.synchronize()

        torch.backends.cuda.matmul.allow_tf32 = False
        tt = min(timed(torch_run, 5))
        res["torch_exact_batch_ms"] = tt * 1e3
        res["quiver_vs_torch"] = tt / best
        print(f"torch mm+topk same batch: {tt*1e3:.1f} ms (Quiver/torch speed {tt/best:.2f}x)",
              flush=True)
        tx = tq = None  # free device memory for the next section
    except Exception as exc:  # noqa: BLE001 - a missing peer is reported, not fatal
        res["torch_exact_batch_ms"] = f"missing: {exc}"
        print(f"torch peer missing: {exc}", flush=True)

    # correctness spot check against float64 numpy on a few queries
    xs = x.get()
    want = np.argsort(-(q[:3].astype(np.float64) @ xs.T.astype(np.float64)), axis=1)[:, :args.k]
    got = flat.search(x, q[:3], args.k, "ip")[1]
    res["exact_recall_vs_fp64"] = float(np.mean([len(set(a) & set(b)) / args.k
                                                 for a, b in zip(got, want, strict=True)]))

    single = timed(lambda: flat.search(x, q[:1], args.k, "ip"), 50)
    p50 = float(np.percentile(single, 50))
    bound = xs.nbytes / (HBM_TBS[key] * 1e12) if key else float("nan")
    res["single_query_p50_ms"] = p50 * 1e3
    res["single_query_p99_ms"] = float(np.percentile(single, 99)) * 1e3
    res["single_query_bandwidth_bound_ms"] = bound * 1e3
    print(f"single query p50 {p50*1e3:.2f} ms (bandwidth bound {bound*1e3:.2f} ms -> "
          f"{p50/bound:.1f}x)", flush=True)

    x16 = x.astype(cupy.float16)
    t16 = min(timed(lambda: flat.search(x16, q, args.k, "ip"), 3))
    res["exact_batch_fp16_storage_ms"] = t16 * 1e3
    print(f"float16 storage, same batch: {t16*1e3:.1f} ms", flush=True)
    x16 = None

    cpu_b = min(args.batch, 50)
    t0 = time.perf_counter()
    flat.search(xs, q[:cpu_b], args.k, "ip")
    tc = time.perf_counter() - t0
    res["cpu_exact_ms_per_query"] = tc / cpu_b * 1e3
    res["gpu_exact_ms_per_query"] = best / args.batch * 1e3
    res["gpu_vs_cpu_per_query"] = (tc / cpu_b) / (best / args.batch)
    print(f"CPU path ({os.cpu_count()} cores, numpy BLAS): {tc/cpu_b*1e3:.2f} ms/query vs GPU "
          f"{best/args.batch*1e3:.4f} ms/query in a batch -> {res['gpu_vs_cpu_per_query']:.0f}x",
          flush=True)
    x = xs = centres = None
    cupy.get_default_memory_pool().free_all_blocks()

    rows = int(args.rehydrate_gb * (1 << 30) / (args.dim * 4))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        path = os.path.join(d, "vec.bin")
        block = rng.standard_normal((1 << 16, args.dim)).astype(np.float32)
        with open(path, "wb") as f:
            for s in range(0, rows, len(block)):
                f.write(block[: min(len(block), rows - s)].tobytes())
        src = np.memmap(path, np.float32, "r", shape=(rows, args.dim))
        np.asarray(src[::4096]).sum()  # touch, and read the whole file once into page cache
        with open(path, "rb") as f:
            while f.read(1 << 26):
                pass
        dest = cupy.empty((rows, args.dim), cupy.float32)
        tf = min(timed(lambda: transfer.fill(dest, src), 3))
        nbytes = rows * args.dim * 4
        ok = bool(cupy.all(dest[-1] == cupy.asarray(src[-1])).get())
        tp = min(timed(lambda: cupy.asarray(np.fromfile(path, np.float32)), 2))
        res["rehydrate_bytes"] = nbytes
        res["rehydrate_gbps"] = nbytes / tf / 1e9
        res["rehydrate_plain_asarray_gbps"] = nbytes / tp / 1e9
        res["rehydrate_verified"] = ok
        print(f"rehydrate {nbytes/1e9:.2f} GB page cache -> device: {nbytes/tf/1e9:.1f} GB/s "
              f"(plain cupy.asarray(np.fromfile): {nbytes/tp/1e9:.1f} GB/s), verified={ok}",
              flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return res



def profile_select(x: Any, q: np.ndarray, k: int, step: int) -> dict[str, float]:
    """Per-stage device times (ms, min of 5) of one chunk's search, to find the bottleneck."""
    import cupy

    from gpu import select

    qd = cupy.asarray(q)
    sc = qd @ x[:step].T
    b, n = sc.shape
    g = n // select.GROUP
    groups = sc[:, : g * select.GROUP].reshape(b, g, select.GROUP)
    gmax = groups.max(axis=2)
    bound = select._lower_bound(gmax, k)
    chosen = gmax >= bound[:, None]
    stages = {
        "gemm": lambda: qd @ x[:step].T,
        "group_max": lambda: groups.max(axis=2),
        "lower_bound": lambda: select._lower_bound(gmax, k),
        "chosen+width": lambda: int(chosen.sum(axis=1).max()),
        "nonzero": lambda: cupy.nonzero(chosen),
        "select_topk_total": lambda: select.select_topk(sc, k),
        "to_host": lambda: select.select_topk(sc, k)[0].get(),
    }
    return {name: min(timed(fn, 5)) * 1e3 for name, fn in stages.items()}


if __name__ == "__main__":
    main(sys.argv[1:])
