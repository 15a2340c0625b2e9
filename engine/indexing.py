"""Background work on sealed rows: HNSW index building and snapshot digests.

The catalog's indexer thread calls `build_pending_index` and `digest_sealed` per collection.
Index builds are tasks (engine.tasks, kind index_build, counted in rows; not cancellable).
Both read rows that never change (rows below a segment's count are immutable), work outside
every lock, and swap their result in with one assignment, so writes and reads never wait.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from engine import ann, tasks
from engine.npy import npy_sha256
from engine.segment import Segment
from engine.segment_store import ids_fingerprint, read_graph, write_graph
from engine.state import CollectionState

log = logging.getLogger("quiver.collection")


def hnsw_params(coll: CollectionState) -> tuple[int, int]:
    """(m, ef_construct) of the collection's hnsw_config."""
    cfg = coll.config.hnsw_config
    return int(cfg.get("m") or 0), int(cfg.get("ef_construct") or 100)


def segment_dir(coll: CollectionState, seg_id: int) -> str:
    return os.path.join(coll.path, "segments", str(seg_id))


def attach_graphs(coll: CollectionState) -> None:
    """After WAL replay: persisted HNSW graphs whose rows (by id fingerprint) are still the
    segment's leading rows are attached; anything else is rebuilt in the background."""
    if not ann.available():
        return
    for seg in coll.segments:
        seg_dir = segment_dir(coll, seg.seg_id)
        for name, spec in coll.config.vectors.items():
            try:
                graph = read_graph(seg_dir, name)
                if graph is None or seg.on_device:
                    continue
                rows = len(graph["levels"])
                if rows > seg.n or not np.array_equal(
                        graph["ids_sha"], ids_fingerprint(seg.id_recs[:rows])):
                    raise ValueError("it describes other rows")
                seg.adopt_index(name, ann.HnswIndex.from_graph(
                    seg.host_rows(name, rows), graph, spec.distance.metric, *hnsw_params(coll)))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("collection %s: ignoring HNSW graph in %s (%s); it will be "
                            "rebuilt", coll.name, seg_dir, exc)


def persist_graphs(coll: CollectionState) -> None:
    """Write every attached index's graph next to its segment (recovered archives' indexes:
    persisted, never rebuilt)."""
    for seg in coll.segments:
        for vname, index in seg.ann.items():
            write_graph(segment_dir(coll, seg.seg_id), vname, index.graph(),
                        seg.id_recs[: index.rows])


def pending_index(coll: CollectionState) -> tuple[Segment, str, int] | None:
    """The next (segment, vector name, rows) whose unindexed rows passed
    `indexing_threshold`; device-resident segments are searched exactly on the GPU."""
    m, _ = hnsw_params(coll)
    if not ann.available() or m <= 0 or coll.closed:
        return None
    for seg in list(coll.segments):
        if seg.on_device:
            continue
        n = seg.n
        for name in coll.config.vectors:
            need = ann.threshold_rows(coll.config.optimizer_config.get("indexing_threshold"),
                                      seg.row_bytes(name))
            have = seg.ann.get(name)
            if need is not None and n - (have.rows if have else 0) >= need:
                return seg, name, n
    return None


def build_pending_index(coll: CollectionState) -> bool:
    """Build (or extend) one index outside every lock (rows below `n` never change), then
    swap it in. Returns False when nothing was pending."""
    task = pending_index(coll)
    if task is None:
        return False
    seg, name, n = task
    spec = coll.config.vectors[name]
    base = seg.ann.get(name)
    # a task (engine.tasks): rows added so far out of the rows this build adds
    with tasks.registry.run("index_build", coll.name, total=n - (base.rows if base else 0),
                            unit="rows") as progress:
        progress.set_phase(f"segment {seg.seg_id}, vector {name!r}")
        vectors = seg.host_rows(name, n).astype(np.float32, copy=False)
        index = ann.HnswIndex.build(vectors, spec.distance.metric, *hnsw_params(coll),
                                    base=base, progress=progress.advance)
    with coll.write_lock:
        if coll.seg_by_id.get(seg.seg_id) is not seg or coll.closed:
            return True  # vacuumed or dropped meanwhile: the new segment gets its own
        seg.adopt_index(name, index)
    write_graph(segment_dir(coll, seg.seg_id), name, index.graph(), seg.id_recs[: index.rows])
    log.info("collection %s: HNSW index over %d rows of segment %d (%r)", coll.name,
             index.rows, seg.seg_id, name)
    return True


def digest_sealed(coll: CollectionState) -> bool:
    """Hash one sealed segment's vectors member ahead of any snapshot (they never change
    again), so snapshot creation only hashes what is still growing. False: none left."""
    for seg in list(coll.segments):
        if not seg.sealed or coll.closed:
            continue
        for name in coll.config.vectors:
            n = seg.n
            if seg.digests.get(name, (-1, ""))[0] != n:
                seg.digests = {**seg.digests, name: (n, npy_sha256(seg.host_rows(name, n)))}
                return True
    return False


def indexed_vectors(coll: CollectionState) -> int:
    return sum(index.rows for seg in coll.segments for index in seg.ann.values())
