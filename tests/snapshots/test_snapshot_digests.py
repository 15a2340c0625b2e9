"""Sealed segments' vector hashes are computed ahead of snapshots; archives built with them
verify on recovery (a stale digest would be rejected as corrupt)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine.catalog import Catalog
from engine.npy import npy_parts
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery


def test_precomputed_digests_match_and_recover(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 64 * 1024)  # seal often
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    coll = cat.create("c", {"vectors": {"size": 16, "distance": "Euclid", "datatype": "float16"}})
    rng = np.random.default_rng(0)
    for s in range(0, 5000, 500):  # segments seal between batches
        apply_body(coll, "upsert", {"batch": {"ids": list(range(s, s + 500)),
                               "vectors": rng.standard_normal((500, 16)).astype(np.float32)}})
    sealed = [s for s in coll.segments if s.sealed]
    assert len(sealed) >= 2
    while coll.digest_sealed():
        pass
    for seg in sealed:
        n, digest = seg.digests[""]
        want = hashlib.sha256(b"".join(bytes(p) for p in npy_parts(seg.host_rows("", n))))
        assert n == seg.n and digest == want.hexdigest()
    assert not coll.segments[-1].digests  # the appendable one is hashed at snapshot time
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    info = mgr.create("c")
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", mgr.path("c", info.name),
                                                        info.checksum)
    assert cat.get("copy").points_count() == 5000
    cat.close()
