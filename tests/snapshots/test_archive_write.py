"""A local archive is written members first and its manifest last (archive.write_archive),
hashing behind the writes: the file must be byte for byte the tar that streaming writes
(manifest first, tarfile's framing), its sha256 the sidecar's, and it must recover."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine import jsonio, tasks
from engine.catalog import Catalog
from snapshots.archive import MANIFEST, prepare_archive, write_archive, write_prepared
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery


def _collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Catalog, int]:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 64 * 1024)  # several segments
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    # a long vector name: its members need GNU long-name header blocks
    name = "v" * 90
    coll = cat.create("c", {"vectors": {"": {"size": 24, "distance": "Cosine"},
                                        name: {"size": 7, "distance": "Dot"}},
                            "sparse_vectors": {"s": {}}})
    rng = np.random.default_rng(3)
    n = 0
    for size in (400, 1, 333, 0, 1200):  # sealed, growing and empty-ish segments
        if not size:
            continue
        ids = list(range(n, n + size))
        apply_body(coll, "upsert", {"batch": {
            "ids": ids, "vectors": {"": rng.standard_normal((size, 24)).tolist(),
                                    name: rng.standard_normal((size, 7)).tolist(),
                                    "s": [{"indices": [i % 11, 20 + i % 3], "values": [1.0, -i]}
                                          for i in ids]},
            "payloads": [{"i": i, "t": "x" * (i % 5)} for i in ids]}})
        n += size
    while coll.digest_sealed():  # some members come with a precomputed digest
        pass
    return cat, n


def test_member_first_file_is_the_streamed_tar(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cat, _ = _collection(tmp_path, monkeypatch)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    _, lazy = mgr._prepare_collection("c", hashed=False)
    _, eager = mgr._prepare_collection("c", hashed=True)
    assert any(d is None for d in lazy.digests) and any(d for d in lazy.digests)
    # same created_at second and mtime for both layouts
    lazy.header = eager.header
    for (a, _), (b, _) in zip(lazy.entries, eager.entries, strict=True):
        a.mtime = b.mtime
    streamed = io.BytesIO()
    write_prepared(streamed, eager)
    seen: list[int] = []
    path = tmp_path / "a.snapshot"
    with open(path, "wb") as f:
        digest = write_archive(f, lazy, seen.append)
    data = path.read_bytes()
    assert data == streamed.getvalue()
    assert len(data) == lazy.size == sum(seen)
    assert digest == hashlib.sha256(data).hexdigest()
    with tarfile.open(path) as tar:
        names = tar.getnames()
        manifest = jsonio.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
        assert names[0] == MANIFEST
        for m in manifest["members"]:
            body = tar.extractfile(m["name"]).read()  # type: ignore[union-attr]
            assert hashlib.sha256(body).hexdigest() == m["sha256"]
    cat.close()


def test_streaming_refuses_unhashed_members(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cat, _ = _collection(tmp_path, monkeypatch)
    prepared = prepare_archive({"collection": "c"}, SnapshotManager(
        cat, str(tmp_path / "snaps"), 1)._prepare_collection("c", hashed=False)[1].members,
        hashed=False)
    with pytest.raises(ValueError):
        write_prepared(io.BytesIO(), prepared)
    cat.close()


def test_created_snapshot_recovers_with_its_checksum(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cat, n = _collection(tmp_path, monkeypatch)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    info = mgr.create("c")
    path = mgr.path("c", info.name)
    assert info.checksum == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", path, info.checksum)
    copy, orig = cat.get("copy"), cat.get("c")
    assert copy.points_count() == orig.points_count() == n
    cat.close()


def test_cancelled_write_leaves_nothing(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cat, _ = _collection(tmp_path, monkeypatch)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)

    def cancel_midway(n: int) -> None:
        raise tasks.Cancelled("cancelled")

    monkeypatch.setattr(tasks, "advance", cancel_midway)
    with pytest.raises(tasks.Cancelled):
        mgr.create("c")
    assert not list((tmp_path / "snaps").rglob("*.snapshot*"))
    assert not list((tmp_path / "snaps" / ".tmp").iterdir())
    cat.close()
