"""The suite's Markdown report and PNG plots (matplotlib, Agg), from the results dict alone.

    .venv/bin/python -m bench.report bench/results/<date>-<host>.json   # re-render a report

`evaluate(res)` judges each target (met / not met / not measured) and says where Quiver
falls short; `write(res, json_path)` writes <stem>.md and <stem>-*.png beside the JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TARGET_TEXT = {
    "ann": "ANN: Quiver QPS ≥ 0.8× hnswlib single-query, ≥ 1.0× batch, at recall@10 0.95",
    "exact": "Exact search within 1.5× faiss IndexFlat",
    "ingest": "REST ingest ≥ 20,000 points/s",
    "snapshot": "Snapshot create ≥ 80% of disk write bandwidth",
    "filtered": "Filtered search beats qdrant-edge at ≤ 1% selectivity",
}


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return None
    return d


def _f(v: Any, spec: str = ".2f", none: str = "—") -> str:
    if v is None:
        return none
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def _sec(res: dict[str, Any], name: str) -> dict[str, Any]:
    return res.get("sections", {}).get(name) or {}


def _fig(res: dict[str, Any], name: str) -> dict[str, Any]:
    return _sec(res, name).get("figures") or {}


def _why_missing(res: dict[str, Any], name: str) -> str:
    sec = _sec(res, name)
    if not sec:
        return "section not run"
    if sec.get("status") in ("missing", "skipped"):
        return f"section {sec['status']}: {sec.get('reason')}"
    return "; ".join(f"{k}: {v}" for k, v in (sec.get("missing") or {}).items()) or "not measured"


# ---- targets ---------------------------------------------------------------------------------


def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: value, peer figure, met (True / False / None = not measured),
    and a sentence saying where Quiver falls short."""
    t = res.get("targets", {})
    rows: list[dict[str, Any]] = []

    # ANN
    ann = _get(_fig(res, "ann"), "bench_ann", "datasets") or {}
    for name, ds in ann.items():
        r = ds.get("ratios") or {}
        s = _get(r, "single_vs_hnswlib", "interp")
        b = _get(r, "batch_vs_hnswlib", "interp")
        q = _get(ds, "engines", "quiver", "at_recall")
        h = _get(ds, "engines", "hnswlib", "at_recall")
        # single and batch have their own targets (batch must at least match hnswlib);
        # results written before the split carry only `ann_vs_hnswlib`
        ts = t.get("ann_single_vs_hnswlib", t.get("ann_vs_hnswlib", 0.8))
        tb = t.get("ann_batch_vs_hnswlib", t.get("ann_vs_hnswlib", 0.8))
        met = None if s is None or b is None else (s >= ts and b >= tb)
        short = ""
        if met is False:
            misses = [f"{mode} {v:.2f}× (target {want}×)"
                      for mode, v, want in (("single-query", s, ts), ("batch", b, tb))
                      if v < want]
            short = f"Quiver vs hnswlib's QPS on {name}: " + ", ".join(misses)
        rows.append({"key": f"ann/{name}", "target": f"{TARGET_TEXT['ann']} ({name})",
                     "value": f"single {_f(s)}×, batch {_f(b)}×",
                     "peer": (f"hnswlib {_f(_get(h, 'single', 'interp_qps'), ',.0f')} / "
                              f"{_f(_get(h, 'batch', 'interp_qps'), ',.0f')} q/s; Quiver "
                              f"{_f(_get(q, 'single', 'interp_qps'), ',.0f')} / "
                              f"{_f(_get(q, 'batch', 'interp_qps'), ',.0f')} q/s"),
                     "met": met, "shortfall": short,
                     "why_missing": None if met is not None else
                     ("recall target not reached or engine missing: "
                      + "; ".join(f"{k}: {v}" for k, v in (ds.get("missing") or {}).items())
                      if ds.get("engines") else str(ds.get("missing")))})
    if not ann:
        rows.append({"key": "ann", "target": TARGET_TEXT["ann"], "value": "—", "peer": "—",
                     "met": None, "shortfall": "", "why_missing": _why_missing(res, "ann")})

    # exact
    ex = _fig(res, "exact").get("engines") or {}
    qi = ex.get("quiver in-process") or {}
    s, b = qi.get("single_p50_vs_faiss"), qi.get("batch_time_vs_faiss")
    lim = t["exact_vs_faiss"]
    met = None if s is None or b is None else (s <= lim and b <= lim)
    short = ""
    if met is False:
        parts = []
        if s > lim:
            parts.append(f"single-query p50 is {s:.2f}× faiss's")
        if b > lim:
            parts.append(f"batch time is {b:.2f}× faiss's")
        short = "Exact search in process: " + " and ".join(parts) + f" (target ≤ {lim}×)"
    f = ex.get("faiss IndexFlatIP") or {}
    rows.append({"key": "exact", "target": TARGET_TEXT["exact"],
                 "value": f"in process: single p50 {_f(s)}×, batch {_f(b)}× faiss",
                 "peer": (f"faiss single p50 {_f(_get(f, 'single', 'p50_ms'), '.3f')} ms, batch "
                          f"{_f(_get(f, 'batch', 'qps'), ',.0f')} q/s; Quiver "
                          f"{_f(_get(qi, 'single', 'p50_ms'), '.3f')} ms, "
                          f"{_f(_get(qi, 'batch', 'qps'), ',.0f')} q/s"),
                 "met": met, "shortfall": short,
                 "why_missing": None if met is not None else _why_missing(res, "exact")})

    # ingest
    runs = _fig(res, "ingest").get("runs") or []
    big = max((r["batch"] for r in runs), default=None)
    cands = [r for r in runs if r["batch"] == big and r.get("indexing_threshold_kb")]
    best = max(cands, key=lambda r: r["points_per_s"], default=None)
    off = next((r for r in runs if not r.get("indexing_threshold_kb")), None)
    met = None if best is None else best["points_per_s"] >= t["ingest_points_per_s"]
    short = ""
    if met is False:
        short = (f"REST ingest peaks at {best['points_per_s']:,.0f} points/s (batch {big}, "
                 f"{best['clients']} client(s), indexing on)"
                 + (f"; {off['points_per_s']:,.0f} with indexing off" if off else ""))
    rows.append({"key": "ingest", "target": TARGET_TEXT["ingest"],
                 "value": "—" if best is None else
                 (f"{best['points_per_s']:,.0f} points/s (batch {big}, {best['clients']} "
                  f"client(s), background indexing on)"),
                 "peer": "—" if off is None else
                 f"indexing off: {off['points_per_s']:,.0f} points/s",
                 "met": met, "shortfall": short,
                 "why_missing": None if met is not None else _why_missing(res, "ingest")})

    # snapshots
    sizes = _fig(res, "snapshots").get("sizes") or []
    ratios = [r["create_vs_disk_write"] for r in sizes]
    met = None if not ratios else min(ratios) >= t["snapshot_vs_disk_write"]
    short = ""
    if met is False:
        bad = [r for r in sizes if r["create_vs_disk_write"] < t["snapshot_vs_disk_write"]]
        short = ("Snapshot creation reaches " + ", ".join(
            f"{r['create_vs_disk_write']:.0%} at {r['size_mb']:,} MiB" for r in bad)
            + " of the disk's write bandwidth (target 80%)")
    rows.append({"key": "snapshot", "target": TARGET_TEXT["snapshot"],
                 "value": "—" if not ratios else
                 f"{min(ratios):.0%} – {max(ratios):.0%} of disk write over "
                 f"{sizes[0]['size_mb']:,} – {sizes[-1]['size_mb']:,} MiB",
                 "peer": "—" if not sizes else
                 f"disk write {min(r['disk_write_Bps'] for r in sizes) / 1e9:.2f} – "
                 f"{max(r['disk_write_Bps'] for r in sizes) / 1e9:.2f} GB/s",
                 "met": met, "shortfall": short,
                 "why_missing": None if met is not None else _why_missing(res, "snapshots")})

    # filtered
    fe = _fig(res, "filtered").get("engines") or {}
    qv = _get(fe, "quiver", "by_selectivity") or {}
    ed = _get(fe, "qdrant-edge", "by_selectivity") or {}
    cut = t["filtered_beats_edge_at_or_below"]
    judged = [sel for sel in qv if float(sel) <= cut and sel in ed]
    met = None if not judged else all(qv[s_]["p50_ms"] < ed[s_]["p50_ms"] for s_ in judged)
    short = ""
    if met is False:
        lose = [s_ for s_ in judged if qv[s_]["p50_ms"] >= ed[s_]["p50_ms"]]
        short = "Filtered search is slower than qdrant-edge at " + ", ".join(
            f"{float(s_):.1%} ({qv[s_]['p50_ms']:.3f} vs {ed[s_]['p50_ms']:.3f} ms p50)"
            for s_ in lose)
    rows.append({"key": "filtered", "target": TARGET_TEXT["filtered"],
                 "value": "; ".join(f"{float(s_):.1%}: {qv[s_]['p50_ms']:.3f} ms p50, recall "
                                    f"{qv[s_]['recall_at_10']:.3f}" for s_ in judged) or "—",
                 "peer": "; ".join(f"{float(s_):.1%}: {ed[s_]['p50_ms']:.3f} ms, recall "
                                   f"{ed[s_]['recall_at_10']:.3f}" for s_ in judged) or "—",
                 "met": met, "shortfall": short,
                 "why_missing": None if met is not None else _why_missing(res, "filtered")})
    return rows


def _met(v: bool | None) -> str:
    return "not measured" if v is None else ("**met**" if v else "**NOT met**")


def summary_table(res: dict[str, Any]) -> str:
    rows = res.get("verdicts") or evaluate(res)
    w = max(len(r["target"]) for r in rows)
    out = [f"{'target':<{w}}  {'status':<12}  Quiver"]
    for r in rows:
        st = "not measured" if r["met"] is None else ("met" if r["met"] else "NOT MET")
        out.append(f"{r['target']:<{w}}  {st:<12}  {r['value']}")
    return "\n".join(out)


# ---- plots -----------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, stem: Path, suffix: str) -> Path:
    """Lay out, write `<stem>-<suffix>.png` and free the figure."""
    fig.tight_layout()
    path = stem.parent / f"{stem.name}-{suffix}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_recall_qps(res: dict[str, Any], stem: Path) -> list[Path]:
    plt = _plt()
    fig_ann = _fig(res, "ann")
    out = []
    target = res.get("targets", {}).get("ann_recall", 0.95)
    for name, ds in (_get(fig_ann, "bench_ann", "datasets") or {}).items():
        engines = dict(ds.get("engines") or {})
        edge = _get(fig_ann, "qdrant_edge", name)
        if edge and edge.get("single"):
            engines["qdrant-edge"] = edge
        if not engines:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        for ax, mode, title in ((axes[0], "single", "single query per call, 1 thread"),
                                (axes[1], "batch", "all queries in one call")):
            for ename, er in engines.items():
                pts = sorted(er.get(mode) or [], key=lambda p: p["ef"])
                if not pts:
                    continue
                ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker="o",
                        label=ename, linewidth=2.2 if ename == "quiver" else 1.3)
                for p in pts:
                    ax.annotate(f"ef {p['ef']}", (p["recall"], p["qps"]), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
            ax.axvline(target, color="grey", linestyle=":", linewidth=1)
            ax.set_yscale("log")
            ax.set_xlabel("recall@10")
            ax.set_ylabel("queries per second")
            info = ds.get("info") or {}
            ax.set_title(f"{name} {info.get('n', '?'):,} x {info.get('dim', '?')}: {title}",
                         fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        out.append(_save(plt, fig, stem, f"recall-qps-{name}"))
    return out


def plot_filtered(res: dict[str, Any], stem: Path) -> list[Path]:
    fe = _fig(res, "filtered").get("engines") or {}
    series = {e: v.get("by_selectivity") or {} for e, v in fe.items()}
    if not any(series.values()):
        return []
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (ename, by) in enumerate(series.items()):
        sels = sorted(float(k) for k in by if float(k) < 1.0)
        if not sels:
            continue
        c = f"C{i}"
        a1.plot([s * 100 for s in sels], [by[str(s)]["p50_ms"] for s in sels], marker="o",
                color=c, label=f"{ename} p50")
        a1.plot([s * 100 for s in sels], [by[str(s)]["p99_ms"] for s in sels], marker="x",
                color=c, linestyle="--", alpha=0.6, label=f"{ename} p99")
        a2.plot([s * 100 for s in sels], [by[str(s)]["recall_at_10"] for s in sels], marker="o",
                color=c, label=ename)
        if "1.0" in by:
            a1.axhline(by["1.0"]["p50_ms"], linestyle=":", linewidth=1, color=c,
                       label=f"{ename} unfiltered p50")
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xlabel("selectivity (% of points passing the filter)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    a1.set_yscale("log")
    a1.set_ylabel("latency per query (ms)")
    a1.set_title("filtered search latency vs selectivity", fontsize=10)
    a2.set_ylabel("recall@10 vs exact filtered search")
    a2.set_ylim(0, 1.05)
    a2.set_title("recall vs selectivity", fontsize=10)
    return [_save(plt, fig, stem, "filtered")]


def plot_snapshots(res: dict[str, Any], stem: Path) -> list[Path]:
    sizes = _fig(res, "snapshots").get("sizes") or []
    if not sizes:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    mb = [r["raw_vector_bytes"] / 2**20 for r in sizes]
    for key, label, style in (("create_Bps", "snapshot create", "o-"),
                              ("recover_Bps", "recover → answering", "s-"),
                              ("disk_write_Bps", "disk sequential write + fsync", "k--"),
                              ("disk_read_Bps", "disk sequential read (cold)", "k:")):
        ax.plot(mb, [r[key] / 1e9 for r in sizes], style, label=label)
    ax.plot(mb, [0.8 * r["disk_write_Bps"] / 1e9 for r in sizes], color="tab:red",
            linestyle="-.", linewidth=1, label="target: 80% of disk write")
    ax.set_xscale("log")
    ax.set_xlabel("collection size (MiB of vectors)")
    ax.set_ylabel("GB/s (archive bytes / s)")
    ax.set_title("snapshot throughput vs size, against the disk measured in the same run",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(plt, fig, stem, "snapshots")]


def plot_scaling(res: dict[str, Any], stem: Path) -> list[Path]:
    f = _fig(res, "scaling")
    pts = f.get("points") or []
    if not pts:
        return []
    plt = _plt()
    import numpy as np

    panels = ((("exact_p50_ms", "p50"), ("exact_min_ms", "fastest")),
              (("hnsw_build_s", "build"),), (("snapshot_create_s", "create"),))
    titles = ("exact search, single query (ms)", "HNSW build (s)", "snapshot create (s)")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
    for ax, series, label in zip(axes, panels, titles, strict=True):
        ax.set_title(label, fontsize=10)
        for j, (key, what) in enumerate(series):
            xy = [(p["n"], p[key]) for p in pts if p.get(key)]
            if not xy:
                continue
            xs, ys = zip(*xy, strict=True)
            ax.loglog(xs, ys, "o", color=f"C{j}", label=f"{what}, measured")
            fit = _get(f, "fits", key) or {}
            if fit.get("slope") is not None:
                gx = np.logspace(np.log10(min(xs)), np.log10(max(xs)), 20)
                ax.loglog(gx, 10 ** (fit["intercept_log10"] + fit["slope"] * np.log10(gx)),
                          "--", color=f"C{j}", label=f"{what}, fit N^{fit['slope']:.2f}")
        ax.set_xlabel("N (points)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return [_save(plt, fig, stem, "scaling")]


def plot_ingest(res: dict[str, Any], stem: Path) -> list[Path]:
    runs = _fig(res, "ingest").get("runs") or []
    if not runs:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    labels = [f"b{r['batch']} × {r['clients']}c" + ("" if r["indexing_threshold_kb"] else
                                                     "\nindex off") for r in runs]
    ax.bar(labels, [r["points_per_s"] for r in runs], color="tab:blue")
    ax.axhline(res.get("targets", {}).get("ingest_points_per_s", 20_000), color="tab:red",
               linestyle="--", label="target")
    ax.set_ylabel("points / s (REST upsert, wait=true)")
    ax.set_title("REST ingest: batch size × clients", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return [_save(plt, fig, stem, "ingest")]


# ---- Markdown ------------------------------------------------------------------------------------


def _table(head: Iterable[str], rows: Iterable[Iterable[Any]], align: str = "") -> list[str]:
    head = list(head)
    al = align or ("l" + "r" * (len(head) - 1))
    sep = ["---:" if a == "r" else "---" for a in al]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _status_line(res: dict[str, Any], name: str) -> list[str]:
    sec = _sec(res, name)
    st = sec.get("status")
    out = []
    if st in ("missing", "skipped"):
        out.append(f"**{st.upper()}** — {sec.get('reason')}")
        out.append("")
    for peer, why in (sec.get("missing") or {}).items():
        out.append(f"* missing: **{peer}** — {why}")
    if sec.get("missing"):
        out.append("")
    noisy = [(k, v) for k, v in (sec.get("load") or {}).items() if v["foreign_cores"] >= 0.10]
    if noisy:
        out.append(f"Run conditions: {len(noisy)} of {len(sec['load'])} steps NOISY (other "
                   "processes used ≥ 0.10 cores): " + "; ".join(
                       f"{k} {v['foreign_cores']:.2f}" for k, v in noisy[:6])
                   + (" …" if len(noisy) > 6 else ""))
        out.append("")
    return out


def _img(paths: list[Path], alt: str) -> list[str]:
    return [f"![{alt}]({p.name})" for p in paths] + ([""] if paths else [])


def md_exact(res: dict[str, Any]) -> list[str]:
    f = _fig(res, "exact")
    out = ["## 1. Exact search", ""]
    if f.get("n"):
        out += [f"{f['n']:,} × {f['dim']} clustered unit vectors (bench.data), top-{f['k']}; "
                f"single: {f['single_queries']} queries one at a time (p50/p99 per query); "
                f"batch: {f['batch_size']} queries in one call, {f['batch_reps']} calls "
                "(q/s = batch size / median call time). Recall@10 against numpy exact "
                f"search over {f['recall_queries']} queries.", ""]
    rows = []
    for label, e in (f.get("engines") or {}).items():
        s, b = e["single"], e["batch"]
        rows.append([label, _f(s["p50_ms"], ".3f"), _f(s["p99_ms"], ".3f"), _f(s["qps"], ",.0f"),
                     _f(b["qps"], ",.0f"), _f(b["p50_ms"], ".1f"), _f(s["recall_at_10"], ".3f"),
                     _f(e.get("single_p50_vs_faiss"), ".2f") + "×",
                     _f(e.get("batch_time_vs_faiss"), ".2f") + "×",
                     e.get("note") or e.get("threads") or e.get("client") or ""])
    if rows:
        out += _table(["engine", "single p50 ms", "p99 ms", "single q/s", "batch q/s",
                       "batch call ms", "recall@10", "single vs faiss", "batch vs faiss",
                       "notes"], rows, "lrrrrrrrrl")
    ann_ex = {n: ds.get("exact") for n, ds in
              (_get(_fig(res, "ann"), "bench_ann", "datasets") or {}).items() if ds.get("exact")}
    for name, ex in ann_ex.items():
        r = [[k, _f(v.get("wall_s", 0) * 1e3, ".1f"), _f(v.get("qps"), ",.0f"),
              _f(v.get("time_vs_faiss"), ".2f") + "×"]
             for k, v in ex.items() if isinstance(v, dict) and "wall_s" in v]
        if r:
            out += [f"bench.ann's exact batch on {name} ({ex.get('queries')} queries × "
                    f"{ex.get('n'):,} × {ex.get('dim')}, all cores):", ""]
            out += _table(["method", "wall ms", "q/s", "time vs faiss"], r)
    return out + _status_line(res, "exact")


def md_ann(res: dict[str, Any], plots: list[Path]) -> list[str]:
    f = _fig(res, "ann")
    out = ["## 2. ANN: recall@10 vs QPS", ""]
    if f.get("command"):
        how = ("measured inside bench.ann's loop, interleaved with the other engines"
               if f.get("qdrant_edge_in_bench_ann") else "measured after bench.ann")
        out += [f"From `{f['command']}` (its own report: "
                f"[{Path(f.get('bench_ann_md', '')).name}]({Path(f.get('bench_ann_md', '')).name}))"
                f" plus the real Qdrant engine in process (qdrant-edge-py "
                f"{res.get('versions', {}).get('qdrant-edge-py')}, HNSW m=16, ef_construct=100, "
                f"one segment, optimize() builds the graph; {how}) on the same data with the "
                "same ef values and the same tie-aware recall. Single mode: one query per call; "
                "batch: all queries in one call (qdrant-edge: `query_batch`, its own search "
                "pool).", ""]
    target = res.get("targets", {}).get("ann_recall", 0.95)
    for name, ds in (_get(f, "bench_ann", "datasets") or {}).items():
        info = ds.get("info") or {}
        if not ds.get("engines"):
            out += [f"### {name}: MISSING — {ds.get('missing')}", ""]
            continue
        out += [f"### {name}: {info.get('n', 0):,} × {info.get('dim')}, {info.get('queries')} "
                "held-out queries", "", str(info.get("description", "")), ""]
        engines = dict(ds["engines"])
        edge = _get(f, "qdrant_edge", name)
        if edge and edge.get("single"):
            engines["qdrant-edge"] = edge
        rows = []
        for ename, er in engines.items():
            a = er.get("at_recall") or {}
            cells = [ename, er.get("version") or "", _f(er.get("build_s"), ".1f"),
                     _f((er.get("index_rss_bytes") or 0) / 2**20, ",.0f")]
            for mode in ("single", "batch"):
                am = a.get(mode) or {}
                cells.append(_f(am.get("interp_qps"), ",.0f") if am.get("reached") else
                             f"not reached (max {_f(am.get('max_recall'), '.3f')})")
            best = max((p["recall"] for p in er.get("single") or []), default=None)
            cells.append(_f(best, ".4f"))
            rows.append(cells)
        out += _table(["engine", "version", "build s", "index RSS MiB",
                       f"single q/s at recall {target}", f"batch q/s at recall {target}",
                       "best recall"], rows, "llrrrrr")
        ratios = {k.replace("_vs_", ": quiver / ").replace("_", " "): _get(v, "interp")
                  for k, v in (ds.get("ratios") or {}).items()}
        ratios.update(_get(f, "edge_ratios", name) or {})
        if ratios:
            out += _table(["QPS ratio at recall target (interpolated)", "value"],
                          [[k, _f(v, ".2f") + "×"] for k, v in ratios.items()])
        for b in f.get("qdrant_edge_builds") or []:
            if b.get("n") == info.get("n") and b.get("dim") == info.get("dim"):
                out += [f"qdrant-edge build ({name}): upsert {_f(b.get('upsert_s'), '.1f')} s "
                        f"(Python → points, WAL), optimize() {_f(b.get('optimize_s'), '.1f')} s "
                        f"(HNSW graph; 'build s' above is both), {b.get('segments')} segment(s), "
                        f"{_f(b.get('indexed_vectors'), ',')} indexed vectors, "
                        f"{_f((b.get('disk_bytes') or 0) / 2**20, ',.0f')} MiB on disk.", ""]
        out += _img([p for p in plots if p.name.endswith(f"-{name}.png")], f"recall vs QPS {name}")
    return out + _status_line(res, "ann")


def md_filtered(res: dict[str, Any], plots: list[Path]) -> list[str]:
    f = _fig(res, "filtered")
    out = ["## 3. Filtered search vs selectivity", ""]
    if f.get("n"):
        out += [f"{f['n']:,} × {f['dim']}, {f['queries']} queries, filter `{f['filter']}` on "
                f"the indexed integer field {f['field']}; both engines: HNSW m={f['m']}, "
                f"ef_construct={f['ef_construct']}, hnsw_ef={f['hnsw_ef']}, "
                f"full_scan_threshold={f['full_scan_threshold_kb']} KB, in process. Recall@10 "
                "against exact filtered search.", ""]
    eng = f.get("engines") or {}
    sels = ["1.0", *[str(s) for s in f.get("selectivities") or []]]
    rows = []
    for s_ in sels:
        cells = ["unfiltered" if s_ == "1.0" else f"{float(s_):.1%}"]
        allowed = None
        for ename in ("quiver", "qdrant-edge"):
            v = _get(eng, ename, "by_selectivity", s_)
            allowed = allowed or _get(v, "allowed_points")
            cells += [_f(_get(v, "p50_ms"), ".3f"), _f(_get(v, "p99_ms"), ".3f"),
                      _f(_get(v, "recall_at_10"), ".3f")]
        q, e = _get(eng, "quiver", "by_selectivity", s_, "p50_ms"), _get(
            eng, "qdrant-edge", "by_selectivity", s_, "p50_ms")
        cells.insert(1, _f(allowed, ","))
        cells.append(_f(q / e if q and e else None, ".2f") + "×")
        rows.append(cells)
    if eng:
        out += _table(["selectivity", "points passing", "Quiver p50 ms", "p99", "recall",
                       "qdrant-edge p50 ms", "p99", "recall", "Quiver / edge p50"], rows)
        out += ["Build: " + "; ".join(
            f"{k} ingest {_f(v.get('ingest_s'), '.1f')} s, index {_f(v.get('build_s'), '.1f')} s"
            for k, v in eng.items()), ""]
    out += _img(plots, "filtered latency and recall vs selectivity")
    return out + _status_line(res, "filtered")


def md_ingest(res: dict[str, Any], plots: list[Path]) -> list[str]:
    f = _fig(res, "ingest")
    out = ["## 4. REST ingest", ""]
    if f.get("n"):
        out += [f"{f['n']:,} × {f['dim']} points, payload {f['payload']}, `PUT /points?wait="
                f"true` to a `quiver serve` subprocess; {f['client']}. {f['indexing']}. "
                "'indexed after' is the time from the last acknowledged upsert until `GET "
                "/collections/{name}` shows status green with indexed_vectors_count == "
                "points_count.", ""]
    rows = []
    for r in f.get("runs") or []:
        rows.append([r["batch"], r["clients"], "on" if r["indexing_threshold_kb"] else "off",
                     _f(r["points_per_s"], ",.0f"), _f(r["wall_s"], ".2f"),
                     _f(_get(r, "batch_rtt", "p50_ms"), ".1f"),
                     _f(_get(r, "batch_rtt", "p99_ms"), ".1f"),
                     _f(r.get("server_cpu_per_s"), ".2f"),
                     (_f(r.get("index_done_after_ingest_s"), ".1f") if r.get(
                         "index_done_after_ingest_s") is not None else
                      ("timed out" if r["indexing_threshold_kb"] else "—"))])
    if rows:
        out += _table(["batch", "clients", "indexing", "points/s", "wall s", "request p50 ms",
                       "p99 ms", "server cores", "indexed after (s)"], rows)
    out += _img(plots, "ingest throughput")
    return out + _status_line(res, "ingest")


def md_snapshots(res: dict[str, Any], plots: list[Path]) -> list[str]:
    f = _fig(res, "snapshots")
    out = ["## 5. Snapshots", ""]
    if f.get("dim"):
        out += [f"Collections of {f['dim']}-d float32 vectors ({f['distance']}), payload "
                f"{f['payload']}; {f['method']}.", ""]
    rows = []
    for r in f.get("sizes") or []:
        rows.append([f"{r['size_mb']:,}", _f(r["points"], ","),
                     _f(r["archive_bytes"] / 2**20, ",.0f"), _f(r["archive_vs_raw_vectors"], ".3f"),
                     _f(r["create_s"], ".2f"), _f(r["create_Bps"] / 1e9, ".2f"),
                     _f(r["disk_write_Bps"] / 1e9, ".2f"), f"{r['create_vs_disk_write']:.0%}",
                     _f(r["recover_s"], ".2f"), _f(r["recover_Bps"] / 1e9, ".2f"),
                     _f(r["disk_read_Bps"] / 1e9, ".2f"), f"{r['recover_vs_disk_read']:.0%}",
                     _f(r["archive_read_Bps"] / 1e9, ".2f")])
    if rows:
        out += _table(["MiB vectors", "points", "archive MiB", "archive / raw", "create s",
                       "create GB/s", "disk write GB/s", "create / disk", "recover s",
                       "recover GB/s", "disk read GB/s", "recover / disk", "archive read GB/s"],
                      rows)
    d = f.get("search_during_snapshot")
    if d:
        out += [f"Search while a snapshot is written ({d['query']}; {d['creates']} creations "
                f"of {', '.join(str(c) for c in d['create_ms'])} ms):", ""]
        out += _table(["", "queries", "p50 ms", "p99 ms", "max ms"],
                      [[k, d[k].get("count"), _f(d[k].get("p50_ms"), ".2f"),
                        _f(d[k].get("p99_ms"), ".2f"), _f(d[k].get("max_ms"), ".2f")]
                       for k in ("idle", "during")])
    out += _img(plots, "snapshot throughput vs size")
    return out + _status_line(res, "snapshots")


def md_scaling(res: dict[str, Any], plots: list[Path]) -> list[str]:
    f = _fig(res, "scaling")
    out = ["## 6. Scaling with N", ""]
    pts = f.get("points") or []
    if pts:
        out += _table(["N", "exact p50 ms", "exact fastest ms", "HNSW build s",
                       "snapshot create s", "snapshot MiB"],
                      [[_f(p["n"], ","), _f(p.get("exact_p50_ms"), ".3f"),
                        _f(p.get("exact_min_ms"), ".3f"),
                        _f(p.get("hnsw_build_s"), ".2f"), _f(p.get("snapshot_create_s"), ".3f"),
                        _f((p.get("snapshot_bytes") or 0) / 2**20, ",.0f")] for p in pts])
        fits = f.get("fits") or {}
        out += _table(["cost", "measured as", "log-log slope (cost ∝ N^slope)",
                       "max residual (log10)"],
                      [[k, (f.get("metrics") or {}).get(k, ""), _f(_get(v, "slope"), ".2f"),
                        _f(_get(v, "max_residual_log10"), ".2f")] for k, v in fits.items()],
                      "llrr")
    out += _img(plots, "scaling log-log")
    return out + _status_line(res, "scaling")


GPU_KEYS = (("exact_batch_ms", "exact batch (ms)", ".1f"),
            ("exact_batch_roofline_fraction", "fraction of fp32 roofline", ".2f"),
            ("gemm_only_ms", "GEMMs alone (ms)", ".1f"),
            ("torch_exact_batch_ms", "torch mm+topk (ms)", ".1f"),
            ("single_query_p50_ms", "single query p50 (ms)", ".2f"),
            ("single_query_bandwidth_bound_ms", "bandwidth bound (ms)", ".2f"),
            ("exact_batch_fp16_storage_ms", "float16 storage batch (ms)", ".1f"),
            ("gpu_vs_cpu_per_query", "GPU vs CPU per query", ",.0f"),
            ("rehydrate_gbps", "rehydration GB/s", ".1f"),
            ("rehydrate_plain_asarray_gbps", "plain cupy.asarray GB/s", ".1f"))


def md_gpu(res: dict[str, Any]) -> list[str]:
    f = _fig(res, "gpu")
    out = ["## 7. GPU", ""]
    this = f.get("this_run")
    ref = _get(f, "committed_reference", "figures")
    if not this:
        out += [f"Not measured in this run: {f.get('skipped') or _why_missing(res, 'gpu')}.", ""]
    if ref or this:
        src = _get(f, "committed_reference", "source")
        head = ["figure"]
        if this:
            head.append(f"this run ({this.get('device')}, {this.get('n'):,} × {this.get('dim')}, "
                        f"batch {this.get('batch')})")
        if ref:
            head.append(f"committed run `{src}` ({ref.get('device')}, {ref.get('n'):,} × "
                        f"{ref.get('dim')}, batch {ref.get('batch')}) — NOT from this run")
        rows = []
        for key, label, spec in GPU_KEYS:
            r = [label]
            if this:
                r.append(_f(this.get(key), spec) if isinstance(this.get(key), int | float)
                         else str(this.get(key, "—")))
            if ref:
                r.append(_f(ref.get(key), spec) if isinstance(ref.get(key), int | float)
                         else str(ref.get(key, "—")))
            rows.append(r)
        out += _table(head, rows)
    elif _get(f, "committed_reference", "missing"):
        out += [f"No committed device figures: {f['committed_reference']['missing']}", ""]
    return out + ([] if _sec(res, "gpu").get("status") == "skipped" else _status_line(res, "gpu"))


def md_runconditions(res: dict[str, Any]) -> list[str]:
    ls = res.get("load_summary") or {}
    out = ["## Run conditions", ""]
    out += [f"Load average (1/5/15 min) at start {res.get('loadavg_start')}, at end "
            f"{res.get('loadavg_end')}. Each step records the CPU that other processes used "
            "meanwhile (bench/sysload.py, from /proc at the step's ends): mean "
            f"{_f(ls.get('mean_foreign_cores'), '.2f')} cores, max "
            f"{_f(ls.get('max_foreign_cores'), '.2f')} ({ls.get('worst_step')}); "
            f"{ls.get('noisy_steps', 0)} of {ls.get('steps', 0)} steps NOISY (≥ 0.10 cores).", ""]
    top = ls.get("worst_top") or []
    if top:
        out += ["Top other processes in the worst step: " + "; ".join(
            f"{t['comm']} ({t['cores']:.2f} cores: `{t['cmd'][:80]}`)" for t in top), ""]
    w = res.get("wait_quiet")
    if w:
        out += [f"Waited {w['waited_s']:.0f} s for an idle machine first: "
                + ("it became idle." if w["quiet"] else "it stayed busy; ran anyway."), ""]
    rows = []
    for name, sec in res.get("sections", {}).items():
        loads = [v["foreign_cores"] for v in (sec.get("load") or {}).values()]
        rows.append([name, sec.get("status"), _f(sec.get("seconds"), ".0f"),
                     _f(max(loads) if loads else None, ".2f"),
                     _f(sum(loads) / len(loads) if loads else None, ".2f"),
                     sec.get("loadavg", {}).get("start"), sec.get("loadavg", {}).get("end")])
    out += _table(["section", "status", "seconds", "max foreign cores", "mean foreign cores",
                   "loadavg start", "loadavg end"], rows, "llrrrll")
    return out


def write(res: dict[str, Any], json_path: Path) -> Path:
    stem = json_path.with_suffix("")
    res["verdicts"] = evaluate(res)
    plots: dict[str, list[Path]] = {}
    plot_errors: dict[str, str] = {}
    for key, fn in (("ann", plot_recall_qps), ("filtered", plot_filtered),
                    ("snapshots", plot_snapshots), ("scaling", plot_scaling),
                    ("ingest", plot_ingest)):
        try:
            plots[key] = fn(res, stem)
        except Exception as exc:  # noqa: BLE001 - a broken plot must not lose the report
            plots[key] = []
            plot_errors[key] = f"{type(exc).__name__}: {exc}"
    res["plots"] = {k: [str(p) for p in v] for k, v in plots.items()}
    if plot_errors:
        res["plot_errors"] = plot_errors
    m = res.get("machine", {})
    v = res.get("versions", {})
    lines = [f"# Quiver benchmark suite — {res.get('started_utc', '')[:16].replace('T', ' ')} "
             f"UTC — {m.get('hostname')} ({res.get('mode', '').upper()})", "",
             f"Command: `{res.get('command')}` — {res.get('total_s', 0) / 60:.1f} min. Raw "
             f"figures: [{json_path.name}]({json_path.name}).", "",
             f"Machine: {m.get('cpu_model')}, {m.get('cpus_usable')} usable CPUs (the server, "
             f"the clients and every peer share them), {(m.get('mem_total_bytes') or 0) / 2**30:.0f}"
             f" GiB RAM, {m.get('platform')}. System load: see Run conditions (load average "
             f"{res.get('loadavg_start')} at start).", "",
             "## Targets", ""]
    lines += _table(["target", "Quiver", "peer in this run", "status"],
                    [[r["target"], r["value"], r["peer"],
                      _met(r["met"]) + (f" ({r['why_missing']})" if r["met"] is None
                                        and r.get("why_missing") else "")]
                     for r in res["verdicts"]], "llll")
    short = [r["shortfall"] for r in res["verdicts"] if r["met"] is False]
    if short:
        lines += ["**Where Quiver falls short:**", ""] + [f"* {s}" for s in short] + [""]
        lines += ["Where the time goes in each shortfall (py-spy profiles): bench/README.md, "
                  "\"Findings\".", ""]
    for note in res.get("findings") or []:
        lines += [f"* {note}"]
    if res.get("findings"):
        lines.append("")
    lines += md_exact(res)
    lines += md_ann(res, plots.get("ann", []))
    lines += md_filtered(res, plots.get("filtered", []))
    lines += md_ingest(res, plots.get("ingest", []))
    lines += md_snapshots(res, plots.get("snapshots", []))
    lines += md_scaling(res, plots.get("scaling", []))
    lines += md_gpu(res)
    lines += ["## Missing peers and skipped sections", ""]
    miss = res.get("missing") or {}
    lines += ([f"* **{k}** — {why}" for k, why in miss.items()] or ["None: every peer ran."])
    lines += [""]
    if plot_errors:
        lines += [f"* plot {k} failed: {e}" for k, e in plot_errors.items()] + [""]
    lines += md_runconditions(res)
    lines += ["## Versions", ""]
    lines += _table(["component", "version"], [[k, val] for k, val in v.items()], "ll")
    md = json_path.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    import json

    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    res = json.loads(path.read_text())
    md = write(res, path)
    print(md)
    print(summary_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
