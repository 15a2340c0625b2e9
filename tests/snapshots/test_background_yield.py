"""Background work yields to snapshot creation: index builds, encodings and digests wait while
an archive is being written, and the indexer thread runs at a lower CPU priority."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine import ann, indexing
from engine.catalog import Catalog
from snapshots import manager as manager_mod
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery

CONFIG = {"vectors": {"size": 16, "distance": "Cosine"},
          "optimizers_config": {"indexing_threshold": 10},  # KB: 160 rows of 16 floats
          "hnsw_config": {"m": 8, "ef_construct": 32}}


def _loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 64 * 1024)  # seal often
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    coll = cat.create("c", CONFIG)
    rng = np.random.default_rng(0)
    for s in range(0, 3000, 500):
        apply_body(coll, "upsert", {"batch": {"ids": list(range(s, s + 500)),
                               "vectors": rng.standard_normal((500, 16)).astype(np.float32)}})
    return cat


def test_background_work_waits_while_a_snapshot_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = _loaded(tmp_path, monkeypatch)
    coll = cat.get("c")
    sealed = [seg for seg in coll.segments if seg.sealed]
    assert len(sealed) >= 2 and not any(seg.digests for seg in sealed)
    done: list[str] = []

    def background() -> None:
        coll.digest_sealed()
        done.append("digest")
        if ann.available():
            coll.build_pending_index()
            done.append("index")

    with indexing.snapshot_gate.writing():
        assert indexing.snapshot_gate.busy()
        th = threading.Thread(target=background, daemon=True)
        th.start()
        th.join(0.5)
        assert th.is_alive() and not done  # held back: nothing hashed or built meanwhile
        assert not any(seg.digests for seg in coll.segments)
        assert not any(seg.ann for seg in coll.segments)
    th.join(30)
    assert not th.is_alive() and done[0] == "digest"
    assert not indexing.snapshot_gate.busy()
    assert sealed[0].digests  # the work went ahead once the snapshot was written
    if ann.available():
        assert any(seg.ann for seg in coll.segments)
    cat.close()


def test_creation_holds_background_work_back(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Collection and full snapshots hold the gate while they prepare and write, release it
    however they end, and their archives still recover."""
    cat = _loaded(tmp_path, monkeypatch)
    seen: list[bool] = []
    real_write = manager_mod.write_archive

    def write(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(indexing.snapshot_gate.busy())
        return real_write(*args, **kwargs)

    monkeypatch.setattr(manager_mod, "write_archive", write)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    info = mgr.create("c")
    assert seen == [True] and not indexing.snapshot_gate.busy()
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", mgr.path("c", info.name),
                                                        info.checksum)
    assert cat.get("copy").points_count() == 3000

    bundle: list[bool] = []
    real_bundle = manager_mod.write_bundle

    def write_bundle(*args, **kwargs):  # type: ignore[no-untyped-def]
        bundle.append(indexing.snapshot_gate.busy())
        return real_bundle(*args, **kwargs)

    monkeypatch.setattr(manager_mod, "write_bundle", write_bundle)
    full = mgr.create_full()
    assert bundle == [True] and full.size and not indexing.snapshot_gate.busy()

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(5, "injected")

    monkeypatch.setattr(manager_mod, "write_archive", fail)
    with pytest.raises(Exception, match="injected"):
        mgr.create("c")
    assert not indexing.snapshot_gate.busy()
    cat.close()


@pytest.mark.skipif(sys.platform != "linux", reason="nice is per thread on Linux only")
def test_lower_priority_is_per_thread() -> None:
    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    got: list[tuple[int, int]] = []

    def worker() -> None:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        indexing.lower_priority()
        got.append((before, os.getpriority(os.PRIO_PROCESS, tid)))

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    before, after = got[0]
    assert after == min(19, before + indexing.BACKGROUND_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main  # not the process


def test_back_to_back_snapshots_cannot_starve_background_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter held HOLD_MAX_S gets a turn of TURN_S that ignores the gate, then waits again."""
    gate = indexing.SnapshotGate()
    monkeypatch.setattr(gate, "HOLD_MAX_S", 0.4)
    monkeypatch.setattr(gate, "TURN_S", 0.6)

    class Open:
        closed = False

    coll = Open()
    with gate.writing():  # a snapshot that never ends (one after the other)
        t0 = time.monotonic()
        gate.wait(coll)  # type: ignore[arg-type]
        held = time.monotonic() - t0
        assert 0.4 <= held < 2.0  # held, then its turn
        t1 = time.monotonic()
        gate.wait(coll)  # type: ignore[arg-type]  # inside the turn: no wait
        assert time.monotonic() - t1 < 0.1
        time.sleep(0.7)  # the turn is over
        t2 = time.monotonic()
        gate.wait(coll)  # type: ignore[arg-type]
        assert time.monotonic() - t2 >= 0.4
    t3 = time.monotonic()
    gate.wait(coll)  # type: ignore[arg-type]  # no snapshot: never waits
    assert time.monotonic() - t3 < 0.1


def test_the_gate_opens_as_soon_as_the_snapshot_is_written() -> None:
    gate = indexing.SnapshotGate()

    class Open:
        closed = False

    released = threading.Event()

    def snapshot() -> None:
        with gate.writing():
            released.wait(5)

    th = threading.Thread(target=snapshot, daemon=True)
    th.start()
    while not gate.busy():
        time.sleep(0.01)
    threading.Timer(0.3, released.set).start()
    t0 = time.monotonic()
    gate.wait(Open())  # type: ignore[arg-type]
    assert 0.25 <= time.monotonic() - t0 < gate.HOLD_MAX_S  # released by the writer
    th.join(5)


@pytest.mark.skipif(not ann.available(), reason="faiss is not installed")
def test_a_build_hashes_segments_sealed_meanwhile_between_its_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long build does not keep sealed segments unhashed until it ends: each batch ends
    with the gate's check and the digests of segments sealed meanwhile (a snapshot taken then
    hashes only what is still growing)."""
    cat = _loaded(tmp_path, monkeypatch)
    coll = cat.get("c")
    sealed = [seg for seg in coll.segments if seg.sealed]
    assert len(sealed) >= 2 and not any(seg.digests for seg in sealed)
    monkeypatch.setattr(ann, "MIN_BATCH", 64)  # several batches over a segment's ~1000 rows
    monkeypatch.setattr(ann, "ADD_BATCH", 64)
    batches: list[int] = []
    real_add = ann.faiss.IndexHNSWFlat.add

    def add(index: object, x: np.ndarray) -> None:
        batches.append(len(x))
        real_add(index, x)

    monkeypatch.setattr(ann.faiss.IndexHNSWFlat, "add", add)
    assert coll.build_pending_index()  # one segment's index, without digest_sealed first
    assert len(batches) >= 2 and max(batches) <= 64
    assert sum(1 for seg in coll.segments if seg.ann) == 1
    for seg in sealed:  # every sealed segment hashed by that one build, as of its rows
        assert seg.digests[""][0] == seg.n
    cat.close()


def test_build_batches_are_sized_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches grow or shrink to last about BATCH_S each, within MIN_BATCH..ADD_BATCH."""
    if not ann.available():
        pytest.skip("faiss is not installed")
    monkeypatch.setattr(ann, "MIN_BATCH", 100)
    monkeypatch.setattr(ann, "ADD_BATCH", 5000)
    monkeypatch.setattr(ann, "BATCH_S", 0.05)
    sizes: list[int] = []
    x = np.random.default_rng(0).standard_normal((6000, 16)).astype(np.float32)
    index = ann.HnswIndex.build(x, "ip", 8, 16, progress=sizes.append)
    assert sum(sizes) == 6000 and index.rows == 6000
    assert sizes[0] == 100 and all(100 <= s <= 5000 for s in sizes)
    assert max(sizes) > 100  # a 100-row batch of 16-d takes far less than 50 ms: it grew
