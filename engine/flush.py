"""Flush and commit: segments persisted as of one WAL sequence number, then the WAL trimmed.

A flush appends new rows to the segment files and writes masks and payloads as new file
generations, then atomically replaces `state.json` — the commit point — and only then drops
the WAL files it covers. Anything written past the commit point by a crashed flush is
removed at the next start, and the WAL replays it.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from engine import jsonio
from engine.durable import fsync_dir, write_atomic
from engine.segment_store import prune_blobs, prune_generations, write_segment
from engine.state import CollectionState


def write_config(coll: CollectionState) -> None:
    data = {"name": coll.name, "config": coll.config.to_state(),
            "payload_schema": coll.payload_schema, "created_at": coll.created_at}
    write_atomic(os.path.join(coll.path, "config.json"), jsonio.dumps(data))


def write_state(coll: CollectionState, metas: list[dict[str, Any]]) -> None:
    state = {"flushed_seq": coll.flushed_seq, "next_segment_id": coll.next_segment_id,
             "gen": coll.gen, "segments": metas}
    write_atomic(os.path.join(coll.path, "state.json"), jsonio.dumps(state))


def needs_flush(coll: CollectionState, wal_limit: int, idle_s: float) -> bool:
    if coll.wal.last_seq <= coll.flushed_seq:
        return False
    return (coll.wal.bytes_since_rotate >= wal_limit
            or time.monotonic() - coll.last_write >= idle_s)


def flush(coll: CollectionState) -> None:
    """Persist segments as of one WAL seq, then drop the WAL files it covers."""
    with coll.flush_lock:
        with coll.write_lock:
            if coll.closed:
                return
            seq = coll.wal.rotate()
            frozen = []
            for seg in coll.segments:
                if seg.dirty or seg.seg_id not in coll.seg_meta:
                    frozen.append((seg, seg.freeze(), seg.flushed_n, seg.payloads_dirty))
                    seg.dirty = seg.payloads_dirty = False
            order = [s.seg_id for s in coll.segments]
        gen = coll.gen + 1
        metas = dict(coll.seg_meta)
        try:
            for seg, fz, flushed_n, pay_dirty in frozen:
                old = coll.seg_meta.get(seg.seg_id)
                # payload_gen None: the payloads are still the recovered archive's
                fresh = pay_dirty or (old is None and seg.blob is None)
                pgen = gen if fresh else (old["payload_gen"] if old else None)
                write_segment(os.path.join(coll.path, "segments", str(seg.seg_id)), fz,
                              flushed_n, gen, pgen if fresh else None)
                metas[seg.seg_id] = {"id": seg.seg_id, "n": fz.n, "gen": gen,
                                     "payload_gen": pgen, "sealed": fz.sealed}
                if seg.blob is not None:
                    metas[seg.seg_id]["blob"] = seg.blob
            fsync_dir(os.path.join(coll.path, "segments"))
            prev_seq, prev_gen = coll.flushed_seq, coll.gen
            coll.flushed_seq, coll.gen = seq, gen
            try:
                write_state(coll, [metas[s] for s in order if s in metas])
            except Exception:
                coll.flushed_seq, coll.gen = prev_seq, prev_gen
                raise
        except Exception:
            for seg, *_ in frozen:
                seg.dirty = seg.payloads_dirty = True
            raise
        for seg, fz, _, _ in frozen:
            seg.flushed_n = fz.n
        coll.seg_meta = {s: metas[s] for s in order if s in metas}
        coll.wal.drop_before(seq)
        remove_stray_segments(coll)


def remove_stray_segments(coll: CollectionState) -> None:
    """Delete segment directories neither committed in state.json nor live in memory
    (vacuumed or never-committed segments), and stale file generations."""
    seg_root = os.path.join(coll.path, "segments")
    keep = set(coll.seg_meta) | set(coll.seg_by_id)
    for name in os.listdir(seg_root):
        if not name.isdigit() or int(name) not in keep:
            shutil.rmtree(os.path.join(seg_root, name), ignore_errors=True)
    for seg_id, meta in coll.seg_meta.items():
        prune_generations(os.path.join(seg_root, str(seg_id)), meta["gen"], meta["payload_gen"])
    prune_blobs(coll.path, coll.seg_meta.values())
