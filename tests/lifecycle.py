"""The second half of a collection's life, shared by the engine suites that check a vector
kind against a reference: WAL replay, flush + vacuum, a restart from segment files only, a
snapshot recovered into a new collection that keeps taking writes, and a last restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.catalog import Catalog
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery

Check = Callable[[Any, dict[int, Any], int], None]  # (collection, expected points, seed)


def reopen(tmp_path: Path) -> Catalog:
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    return cat


def replay_vacuum_snapshot(tmp_path: Path, cat: Catalog, points: dict[int, Any],
                           check: Check, upsert: Callable[[Any, dict[int, Any]], None],
                           more: dict[int, Any], seed: int) -> None:
    """`cat` holds collection `c` with `points` (its last writes still only in the WAL).
    `check` must hold after every step; `more` is written into the recovered copy."""
    cat.close()
    cat = reopen(tmp_path)  # WAL replay
    check(cat.get("c"), points, seed)
    cat.get("c").flush()
    assert cat.get("c").vacuum() > 0
    check(cat.get("c"), points, seed + 1)
    cat.get("c").flush()
    cat.close()
    cat = reopen(tmp_path)  # from the segment files only
    coll = cat.get("c")
    assert coll.wal.last_seq == coll.flushed_seq
    check(coll, points, seed + 2)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    info = mgr.create("c")
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", mgr.path("c", info.name),
                                                        info.checksum)
    check(cat.get("copy"), points, seed + 3)
    upsert(cat.get("copy"), more)
    check(cat.get("copy"), {**points, **more}, seed + 4)
    cat.get("copy").flush()
    cat.close()
    cat = reopen(tmp_path)  # the recovered copy, from its archive and its own files
    check(cat.get("copy"), {**points, **more}, seed + 5)
    cat.close()
