"""@qdrant/js-client-rest runs the seed document's TypeScript examples against Quiver.

Needs Node.js and `npm install` in tests/js (`make test` does it when npm exists); on a
machine without Node the test is skipped and says why."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from server import QuiverServer

JS = Path(__file__).resolve().parents[1] / "js"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.skipif(not (JS / "node_modules" / "@qdrant" / "js-client-rest").exists(),
                    reason="run `npm install` in tests/js (make test does)")
def test_seed_typescript_examples(tmp_path: Path) -> None:
    srv = QuiverServer(tmp_path / "storage",
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    try:
        r = subprocess.run(["node", "seed_examples.mjs"], cwd=JS, capture_output=True, text=True,
                           timeout=120, env={**os.environ, "QUIVER_URL": srv.url})
        assert r.returncode == 0, r.stdout + r.stderr + srv.log()
        assert "js seed examples: ok" in r.stdout
    finally:
        srv.stop()
