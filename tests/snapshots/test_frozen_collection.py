"""SnapshotManager.freeze_collection + write_frozen (write_collection_archive in two steps,
for the cluster snapshot's short barrier): the archive holds exactly the frozen state however
the collection changes in between, and the snapshot gate is held from the freeze until the
write ends or the frozen state is released."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.parse import reads
from api.parse.writes import apply_body
from engine import query
from engine.catalog import Catalog
from engine.indexing import snapshot_gate
from snapshots import manager as manager_mod
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery

DIM = 16


def _all(cat: Catalog, name: str) -> list[dict[str, Any]]:
    req = reads.scroll_request({"limit": 100_000, "with_payload": True, "with_vector": True})
    points, _ = query.scroll(cat.get(name), req)
    return sorted(points, key=lambda p: p["id"])


def _upsert(coll: Any, ids: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    apply_body(coll, "upsert", {"batch": {
        "ids": ids, "vectors": rng.standard_normal((len(ids), DIM)).tolist(),
        "payloads": [{"i": i, "s": seed} for i in ids]}})


def test_archive_holds_the_frozen_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 16 * 1024)  # several segments
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    coll = cat.create("c", {"vectors": {"size": DIM, "distance": "Cosine"}})
    _upsert(coll, list(range(600)), 1)
    want = _all(cat, "c")
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    frozen = mgr.freeze_collection("c")
    assert snapshot_gate.busy()
    # after the freeze: new points (new segments), new vectors for old points, payload
    # changes, deletes
    _upsert(coll, list(range(550, 900)), 2)
    apply_body(coll, "set_payload", {"payload": {"x": 1}, "points": [3, 4]})
    apply_body(coll, "delete", {"points": [0, 1, 2]})
    coll.flush()
    assert _all(cat, "c") != want
    dest = str(tmp_path / "snaps" / "frozen.snapshot")
    real, checksum, size = mgr.write_frozen(frozen, dest)
    assert real == "c" and not snapshot_gate.busy()
    assert frozen.seq < coll.wal.last_seq
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", dest, checksum)
    assert _all(cat, "copy") == want
    assert cat.get("copy").wal.last_seq == frozen.seq
    cat.close()


def test_gate_released_when_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    _upsert(cat.create("c", {"vectors": {"size": DIM, "distance": "Dot"}}), [1, 2, 3], 1)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    frozen = mgr.freeze_collection("c")
    assert snapshot_gate.busy()
    frozen.release()
    frozen.release()  # idempotent: the gate is counted once
    assert not snapshot_gate.busy()

    def fail(*args: Any, **kwargs: Any) -> str:
        raise OSError(5, "injected")

    monkeypatch.setattr(manager_mod, "write_archive", fail)
    frozen = mgr.freeze_collection("c")
    with pytest.raises(OSError, match="injected"):
        mgr.write_frozen(frozen, str(tmp_path / "x.snapshot"))
    assert not snapshot_gate.busy()
    cat.close()
