"""Every acknowledged write survives kill -9; WAL records are CRC-checked; torn tails are ignored."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from server import QuiverServer

from api.parse.writes import apply_body
from engine.catalog import Catalog
from engine.filters import parse_filter
from engine.plan import CountRequest, RetrieveRequest
from engine.wal import Wal


def _writer(url: str, acked: list[int], stop: threading.Event, dim: int, start: int) -> None:
    rng = np.random.default_rng(start)
    next_id = start
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            ids = list(range(next_id, next_id + 50))
            vecs = rng.standard_normal((50, dim)).round(4).tolist()
            body = {"points": [{"id": i, "vector": v, "payload": {"i": i}}
                               for i, v in zip(ids, vecs, strict=True)]}
            try:
                r = c.put("/collections/crash/points", params={"wait": "true"}, json=body)
            except httpx.HTTPError:
                return  # the server died mid-request: this batch was never acknowledged
            if r.status_code == 200:
                acked.extend(ids)
            next_id += 50


@pytest.mark.parametrize("wal_mb", ["32", "1"], ids=["wal-only", "flushing"])
def test_kill9_mid_upload_keeps_every_acknowledged_point(tmp_path: Path, wal_mb: str) -> None:
    # wal_mb=1 forces segment flushes while the writers run, so kill -9 also lands mid-flush.
    srv = QuiverServer(tmp_path / "storage",
                       env={"QUIVER__STORAGE__FLUSH__WAL_BYTES_MB": wal_mb,
                            "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    try:
        httpx.put(srv.url + "/collections/crash",
                  json={"vectors": {"size": 8, "distance": "Euclid"}}).raise_for_status()
        for cycle in range(3):
            acked: list[int] = []
            stop = threading.Event()
            threads = [threading.Thread(target=_writer,
                                        args=(srv.url, acked, stop, 8, 1_000_000 * (cycle + 1)
                                              + 100_000 * t))
                       for t in range(2)]
            for t in threads:
                t.start()
            time.sleep(random.uniform(0.5, 1.5))
            srv.kill9()
            stop.set()
            for t in threads:
                t.join()
            assert acked, "the writers never got an acknowledgement"
            srv.start()
            r = httpx.post(srv.url + "/collections/crash/points",
                           json={"ids": acked, "with_payload": True}, timeout=30)
            got = {p["id"]: p["payload"]["i"] for p in r.json()["result"]}
            missing = set(acked) - set(got)
            assert not missing, f"cycle {cycle}: {len(missing)} acknowledged points lost"
            assert all(got[i] == i for i in acked)
    finally:
        srv.stop()


def test_wal_torn_tail_is_ignored_and_appends_continue(tmp_path: Path) -> None:
    wal = Wal(str(tmp_path / "wal"))
    wal.open_for_append()
    for i in range(5):
        wal.append({"op": "delete", "ids": [i], "arrays": {"x": np.arange(i + 1)}})
    wal.close()
    path = wal.files()[-1][1]
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 7)  # a torn final record
    wal2 = Wal(str(tmp_path / "wal"))
    got = list(wal2.replay(0))
    assert [seq for seq, _ in got] == [1, 2, 3, 4]
    assert got[3][1]["arrays"]["x"].tolist() == [0, 1, 2, 3]
    wal2.open_for_append()
    assert wal2.append({"op": "delete", "ids": [9]}) == 5
    wal2.close()
    assert [seq for seq, _ in Wal(str(tmp_path / "wal")).replay(0)] == [1, 2, 3, 4, 5]


def test_wal_crc_catches_a_flipped_byte(tmp_path: Path) -> None:
    wal = Wal(str(tmp_path / "wal"))
    wal.open_for_append()
    for i in range(3):
        wal.append({"op": "delete", "ids": [i]})
    wal.close()
    path = wal.files()[-1][1]
    data = bytearray(open(path, "rb").read())
    data[-3] ^= 0xFF  # inside the last record's body
    open(path, "wb").write(bytes(data))
    assert [seq for seq, _ in Wal(str(tmp_path / "wal")).replay(0)] == [1, 2]


def _make(root: Path) -> Catalog:
    cat = Catalog(str(root))
    cat.load()
    return cat


def test_uncommitted_flush_debris_is_ignored(tmp_path: Path) -> None:
    """Rows appended to segment files by a flush that never committed state.json are dropped;
    the WAL still replays them, so nothing is lost or duplicated."""
    cat = _make(tmp_path)
    c = cat.create("c", {"vectors": {"size": 2, "distance": "Dot"}})
    apply_body(c, "upsert", {"points": [{"id": i, "vector": [i, 1]} for i in range(10)]})
    c.flush()
    apply_body(c, "upsert", {"points": [{"id": i, "vector": [i, 2]} for i in range(10, 15)]})
    seg_dir = tmp_path / "collections" / "c" / "segments" / "0"
    with open(seg_dir / "vec-.bin", "ab") as f:  # a crashed flush's partial append
        f.write(b"\x00" * 24)
    (seg_dir / "masks.999.npz").write_bytes(b"garbage")
    c.wal.close()  # simulate a crash: no catalog close, so no final flush
    cat2 = _make(tmp_path)
    c2 = cat2.get("c")
    assert c2.points_count() == 15
    from engine import query
    pts = query.retrieve(c2, RetrieveRequest(list(range(15)), False, True))
    assert [p["vector"][1] for p in pts] == [1.0] * 10 + [2.0] * 5
    assert not (seg_dir / "masks.999.npz").exists()
    cat2.close()


def test_the_flushers_sweep_leaves_a_write_in_progress(tmp_path: Path) -> None:
    """prune_generations (the flusher) removes temp files left by interrupted writes, not
    the one the indexer is writing into the same segment directory at that moment (it did:
    the rename failed, 'building an index failed', and a restart rebuilt the index)."""
    from engine.durable import atomic_writer
    from engine.segment_store import prune_generations

    seg_dir = tmp_path / "segments" / "0"
    seg_dir.mkdir(parents=True)
    stale = seg_dir / ".tmp-0123456789abcdef0123456789abcdef-ivf-.npz"
    stale.write_bytes(b"left by a crash")
    with atomic_writer(str(seg_dir / "ivf-.npz")) as f:
        f.write(b"first half ")
        prune_generations(str(seg_dir), None, None)
        f.write(b"second half")
    assert (seg_dir / "ivf-.npz").read_bytes() == b"first half second half"
    assert not stale.exists()
    assert sorted(p.name for p in seg_dir.iterdir()) == ["ivf-.npz"]
    prune_generations(str(seg_dir), None, None)  # a finished write is no longer protected
    (seg_dir / stale.name).write_bytes(b"another leftover")
    prune_generations(str(seg_dir), None, None)
    assert sorted(p.name for p in seg_dir.iterdir()) == ["ivf-.npz"]


def test_restart_restores_deletes_payload_updates_and_indexes(tmp_path: Path) -> None:
    cat = _make(tmp_path)
    c = cat.create("c", {"vectors": {"size": 2, "distance": "Cosine"}})
    apply_body(c, "upsert", {"points": [{"id": i, "vector": [1, i], "payload": {"g": i % 3}}
                         for i in range(30)]})
    c.flush()
    apply_body(c, "delete", {"points": [0, 1]})
    apply_body(c, "set_payload", {"payload": {"x": "y"}, "points": [5]})
    c.create_index("g", "integer")
    apply_body(c, "upsert", {"points": [{"id": 5, "vector": [2, 2], "payload": {"new": True}}]})
    cat.update_aliases([{"create_alias": {"collection_name": "c", "alias_name": "al"}}])
    cat.close()
    cat2 = _make(tmp_path)
    c2 = cat2.get("al")
    from engine import query
    assert c2.points_count() == 28
    assert query.retrieve(c2, RetrieveRequest([0, 1], True, False)) == []
    assert query.retrieve(c2, RetrieveRequest([5], True, False))[0]["payload"] == {"new": True}
    assert c2.payload_schema["g"]["type"] == "integer"
    # ids with g == 2 are 2, 5, 8, ..., 29; point 5 was replaced by a payload without `g`
    assert query.count(c2, CountRequest(parse_filter({"must": [{"key": "g", "match": {"value": 2}}]}))) == 9
    cat2.close()


def test_vacuum_compacts_repeated_upserts_and_survives_restart(tmp_path: Path) -> None:
    from engine import query
    cat = _make(tmp_path)
    c = cat.create("c", {"vectors": {"size": 2, "distance": "Dot"},
                         "optimizers_config": {"vacuum_min_vector_number": 100}})
    for rnd in range(5):  # the same 100 ids rewritten: 80% of rows become garbage
        apply_body(c, "upsert", {"points": [{"id": i, "vector": [i, rnd], "payload": {"r": rnd}}
                             for i in range(100)]})
    seg_before = c.appendable
    assert seg_before.n == 500
    view = c.view()  # a reader holding the old segment keeps working
    assert c.vacuum() == 1
    assert c.appendable.n == 100 and c.appendable is not seg_before
    hits = query.search_batch(c, [query.SearchSpec(np.array([0, 1], np.float32), "", None, 3,
                                                   0, None, True, False)])[0]
    assert [h["payload"]["r"] for h in hits] == [4, 4, 4]
    assert len(view.segments) == 1 and view.segments[0][0] is seg_before
    assert query.count(c, CountRequest(parse_filter({"must": [{"has_id": [1, 2, 3]}]}))) == 3
    c.flush()
    dirs = sorted(os.listdir(tmp_path / "collections" / "c" / "segments"))
    assert str(seg_before.seg_id) not in dirs
    cat.close()
    c2 = _make(tmp_path).get("c")
    assert c2.points_count() == 100
    assert query.retrieve(c2, RetrieveRequest([7], True, True))[0] == {"id": 7, "payload": {"r": 4},
                                                       "vector": [7.0, 4.0]}


def test_a_broken_collection_does_not_stop_the_others(tmp_path: Path) -> None:
    cat = _make(tmp_path)
    apply_body(cat.create("good", {"vectors": {"size": 2, "distance": "Dot"}}), "upsert",
        {"points": [{"id": 1, "vector": [1, 2]}]})
    cat.create("bad", {"vectors": {"size": 2, "distance": "Dot"}})
    cat.update_aliases([{"create_alias": {"collection_name": "bad", "alias_name": "b"}}])
    cat.close()
    (tmp_path / "collections" / "bad" / "state.json").write_bytes(b"{not json")
    (tmp_path / "collections" / "good" / ".tmp-123-config.json").write_bytes(b"partial")
    cat2 = _make(tmp_path)
    assert cat2.get("good").points_count() == 1
    assert "bad" in cat2.broken
    from engine.errors import AlreadyExists, StorageError
    with pytest.raises(StorageError, match="failed to load"):
        cat2.get("b")
    with pytest.raises(AlreadyExists):
        cat2.create("bad", {"vectors": {"size": 2, "distance": "Dot"}})
    assert not (tmp_path / "collections" / "good" / ".tmp-123-config.json").exists()
    cat2.close()


def test_interrupted_swap_restores_the_old_collection(tmp_path: Path) -> None:
    """A crash between parking the old collection and moving the new one in."""
    cat = _make(tmp_path)
    apply_body(cat.create("c", {"vectors": {"size": 2, "distance": "Dot"}}), "upsert",
        {"points": [{"id": 1, "vector": [1, 2]}]})
    cat.close()
    coll_dir = tmp_path / "collections" / "c"
    parked = tmp_path / f".swap-{b'c'.hex()}-0123"
    os.rename(coll_dir, parked)
    cat2 = _make(tmp_path)
    assert cat2.get("c").points_count() == 1 and not parked.exists()
    cat2.close()
    # and when the new one did make it, the parked old one is dropped
    parked.mkdir()
    cat3 = _make(tmp_path)
    assert cat3.get("c").points_count() == 1 and not parked.exists()
    cat3.close()
