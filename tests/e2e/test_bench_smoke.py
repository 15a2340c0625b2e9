"""`python -m bench --quick` runs every section end to end and writes a complete report.

Runs as a subprocess (the suite configures process-wide state: the array backend, OpenMP
thread counts) into a temporary directory. No timing is asserted: the machine may be busy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("exact", "ann", "filtered", "ingest", "snapshots", "scaling", "gpu")


@pytest.mark.timeout(420)
def test_quick_suite_writes_every_section(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out-dir", str(tmp_path), "--name", "smoke",
         "--wait-quiet", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    res = json.loads((tmp_path / "smoke.json").read_text())

    assert res["mode"] == "quick"
    assert set(res["sections"]) == set(SECTIONS)
    for name in SECTIONS:
        sec = res["sections"][name]
        assert sec["status"] in ("ok", "partial", "missing", "skipped"), (name, sec)
        if sec["status"] in ("ok", "partial"):
            assert sec["figures"], f"{name}: no figures"
        else:  # never silently dropped: a section that did not run says why
            assert sec["reason"], f"{name}: {sec['status']} without a reason"
            assert name in res["missing"]
        for peer, why in sec.get("missing", {}).items():
            assert why, f"{name}: peer {peer} missing without a reason"

    # the sections that need no optional peer measure Quiver itself
    for name in ("exact", "ingest", "snapshots", "scaling"):
        assert res["sections"][name]["status"] in ("ok", "partial"), res["sections"][name]
    exact = res["sections"]["exact"]["figures"]["engines"]
    assert exact["quiver in-process"]["single"]["recall_at_10"] >= 0.99
    assert exact["quiver HTTP"]["single"]["recall_at_10"] >= 0.99
    runs = res["sections"]["ingest"]["figures"]["runs"]
    assert {(r["batch"], r["clients"]) for r in runs} >= {(100, 1), (100, 4), (1000, 1),
                                                        (1000, 4)}
    assert all(r["points_count"] == r["points"] for r in runs)
    assert res["sections"]["snapshots"]["figures"]["sizes"]
    fits = res["sections"]["scaling"]["figures"]["fits"]
    assert {"exact_p50_ms", "hnsw_build_s", "snapshot_create_s"} <= set(fits)
    gpu = res["sections"]["gpu"]["figures"]
    assert "committed_reference" in gpu  # device figures from the committed run, labelled

    # every target is judged or says why not; machine and peer versions are recorded
    assert len(res["verdicts"]) >= 5
    assert all(v["met"] is not None or v["why_missing"] for v in res["verdicts"])
    assert res["machine"]["cpus_usable"] and "numpy" in res["versions"]
    assert "qdrant-edge-py" in res["versions"] and "hnswlib" in res["versions"]

    report = tmp_path / "smoke.md"
    text = report.read_text()
    for heading in ("## Targets", "## 1. Exact search", "## 2. ANN", "## 3. Filtered",
                    "## 4. REST ingest", "## 5. Snapshots", "## 6. Scaling", "## 7. GPU",
                    "## Run conditions", "## Versions"):
        assert heading in text
    pngs = sorted(tmp_path.glob("smoke-*.png"))
    assert pngs, "no plots written"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.name})" in text or png.name.startswith("smoke-suite-ann-"), png.name


@pytest.mark.timeout(180)
def test_grpc_bench_quick_reports_both_transports(tmp_path: Path) -> None:
    out = tmp_path / "grpc.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.grpc", "--quick", "--n", "3000", "--queries", "30",
         "--warmup", "5", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    res = json.loads(out.read_text())
    assert set(res["latency"]) == {"qdrant-client gRPC", "qdrant-client REST", "raw gRPC stub",
                                   "raw REST http.client"}
    assert all(s["count"] == 30 and s["p50_ms"] > 0 for s in res["latency"].values())
    assert res["top_mismatches"] == 0  # one handler behind both transports
    assert {f"{m}/{t}" for m in ("upload_collection", "upload_points")
            for t in ("grpc", "rest")} == set(res["bulk"])
    assert res["load_s"] > 0 and "REST / gRPC" in proc.stdout
