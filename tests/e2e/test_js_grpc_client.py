"""@qdrant/js-client-grpc makes the seed document's snapshot calls against Quiver's gRPC port.

tests/js/seed_grpc.mjs creates, lists and deletes collection and full-storage snapshots over
gRPC and prints every answer as JSON; this test checks them against what REST lists on the
same server. Needs Node.js and `npm install` in tests/js (`make test` does it when npm
exists); on a machine without Node the test is skipped and says why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from server import QuiverServer

JS = Path(__file__).resolve().parents[1] / "js"


def _instant(iso: str) -> datetime:
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _rest_form(snaps: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(name, size, checksum, creation instant) of REST's or the script's descriptions."""
    return sorted((s["name"], s["size"], s.get("checksum"), _instant(s["creation_time"]))
                  for s in snaps)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.skipif(not (JS / "node_modules" / "@qdrant" / "js-client-grpc").exists(),
                    reason="run `npm install` in tests/js (make test does)")
def test_seed_snapshot_calls_over_grpc(tmp_path: Path) -> None:
    srv = QuiverServer(tmp_path / "storage", grpc=True,
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    try:
        http = httpx.Client(base_url=srv.url, timeout=30)
        name = "js_grpc_collection"
        assert http.put(f"/collections/{name}", json={
            "vectors": {"size": 4, "distance": "Cosine"}}).status_code == 200
        rng = np.random.default_rng(14)
        assert http.put(f"/collections/{name}/points", params={"wait": "true"}, json={
            "points": [{"id": i, "vector": rng.normal(size=4).tolist(), "payload": {"i": i}}
                       for i in range(30)]}).status_code == 200
        r = subprocess.run(["node", "seed_grpc.mjs"], cwd=JS, capture_output=True, text=True,
                           timeout=120, env={**os.environ, "QUIVER_HOST": "127.0.0.1",
                                             "QUIVER_GRPC_PORT": str(srv.grpc_port),
                                             "QUIVER_COLLECTION": name})
        assert r.returncode == 0, r.stdout + r.stderr + srv.log()
        out = json.loads(r.stdout.strip().splitlines()[-1])

        rest = http.get(f"/collections/{name}/snapshots").json()["result"]
        assert _rest_form(out["listed_after_delete"]) == _rest_form(rest)
        assert [s["name"] for s in rest] == [out["created"][0]["name"]]
        assert out["deleted"] == out["created"][1]["name"]
        assert _rest_form(out["listed"]) == _rest_form(out["created"])
        assert all(len(s["checksum"]) == 64 and s["size"] > 0 for s in out["created"])

        full = http.get("/snapshots").json()["result"]
        assert _rest_form(out["full_listed"]) == _rest_form(full)
        assert [s["name"] for s in full] == [out["full_created"]["name"]]
        assert out["full_deleted"] not in {s["name"] for s in full}

        missing = http.get(f"/collections/{name}_missing/snapshots").json()["status"]["error"]
        assert out["missing"] == {"code": 5, "message": missing}  # 5: NOT_FOUND
    finally:
        srv.stop()
