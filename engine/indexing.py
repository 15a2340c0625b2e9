"""Background work on sealed rows: HNSW index building and snapshot digests.

The catalog's indexer thread calls `digest_sealed` (first: segments are hashed as they seal,
and between a running build's batches) and `build_pending_index` per collection.
Index builds are tasks (engine.tasks, kind index_build, counted in rows; not cancellable).
Both read rows that never change (rows below a segment's count are immutable), work outside
every lock, and swap their result in with one assignment, so writes and reads never wait.

Background work yields to snapshots: while an archive is being written (`snapshot_gate`) no
build, encoding or digest starts, and a running build pauses between its batches (held a
minute in one go, it gets a turn: back-to-back snapshots cannot starve it). The thread
running it (the catalog's indexer) runs at a lower CPU priority (`lower_priority`), so the
batch in flight loses the cores to requests and to a snapshot's writer and hashing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from engine import ann, ivf, quantization, tasks
from engine.npy import npy_sha256
from engine.segment import Segment
from engine.segment_store import (
    ids_fingerprint,
    read_codes,
    read_graph,
    read_ivf,
    write_codes,
    write_graph,
    write_ivf,
)
from engine.state import CollectionState

log = logging.getLogger("quiver.collection")
QUANTIZE_MIN_ROWS = 256  # a segment's unquantized tail is encoded past this many rows
BACKGROUND_NICE = 10  # added to the indexer thread's nice value (its CPU weight: ~1/10)


class SnapshotGate:
    """How many snapshot archives are being written in this process. Background work waits
    while any is: on a small machine an HNSW build (faiss on every core) took the cores the
    archive's writer and hashing need (py-spy, bench.snapshots --bulk), and an archive
    carries unindexed rows as they are, so nothing built meanwhile would be in it.

    Fairness: a waiter held HOLD_MAX_S in one go gets a turn of TURN_S during which it
    ignores the gate, so back-to-back snapshots (a tight schedule, many collections in turn)
    slow background work down to at least TURN_S / (HOLD_MAX_S + TURN_S) of the time instead
    of starving it: searches would otherwise scan unindexed rows for as long as they last."""

    HOLD_MAX_S = 60.0
    TURN_S = 15.0

    def __init__(self) -> None:
        self._writing = 0
        self._cond = threading.Condition()
        self._turn_until = 0.0  # monotonic: background work's turn runs until then

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold background work back for the duration (snapshot creation)."""
        with self._cond:
            self._writing += 1
        try:
            yield
        finally:
            with self._cond:
                self._writing -= 1
                self._cond.notify_all()

    def busy(self) -> bool:
        """Whether a snapshot is being written now."""
        return self._writing > 0

    def wait(self, coll: CollectionState) -> None:
        """Return once no snapshot is being written (or the collection closed), or once
        held HOLD_MAX_S (background work's turn, see above)."""
        with self._cond:
            if not self._writing or time.monotonic() < self._turn_until:
                return
            held_since = time.monotonic()
            while self._writing and not coll.closed:
                now = time.monotonic()
                if now - held_since >= self.HOLD_MAX_S:
                    self._turn_until = now + self.TURN_S
                    log.info("background work held %.0f s by snapshots: it runs %.0f s now",
                             now - held_since, self.TURN_S)
                    return
                self._cond.wait(min(0.5, self.HOLD_MAX_S - (now - held_since)))


snapshot_gate = SnapshotGate()


def lower_priority() -> None:
    """Lower the calling thread's CPU priority by BACKGROUND_NICE (Linux: nice is per thread;
    the OpenMP workers faiss starts from this thread inherit it). For the background indexer
    only: it uses the cores nobody else wants and gives them up at once when requests or a
    snapshot need them. Irreversible without privileges; Linux only, best effort."""
    if sys.platform != "linux":  # elsewhere PRIO_PROCESS takes a process id, not a thread's
        return
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))


def hnsw_params(coll: CollectionState) -> tuple[int, int]:
    """(m, ef_construct) of the collection's hnsw_config."""
    cfg = coll.config.hnsw_config
    return int(cfg.get("m") or 0), int(cfg.get("ef_construct") or 100)


def segment_dir(coll: CollectionState, seg_id: int) -> str:
    return os.path.join(coll.path, "segments", str(seg_id))


def attach_graphs(coll: CollectionState) -> None:
    """After WAL replay: persisted HNSW graphs whose rows (by id fingerprint) are still the
    segment's leading rows are attached; anything else is rebuilt in the background. A
    persisted FAISS IVF index (engine/ivf.py) likewise, first where one is configured."""
    if not ann.available():
        return
    want = ivf.configured()
    for seg in coll.segments:
        seg_dir = segment_dir(coll, seg.seg_id)
        for name, spec in coll.config.vectors.items():
            if want is not None and _attach_ivf(coll, seg, name, spec.distance.metric, want):
                continue
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
            if want is None and name not in seg.ann:
                _attach_ivf(coll, seg, name, spec.distance.metric, want)


def _attach_ivf(coll: CollectionState, seg: Segment, name: str, metric: str,
                want: ivf.IvfSpec | None) -> bool:
    """Attach a segment's persisted IVF index, rehydrated without retraining; False when
    there is none or it no longer describes the segment's leading rows."""
    seg_dir = segment_dir(coll, seg.seg_id)
    try:
        rec = read_ivf(seg_dir, name)
        if rec is None:
            return False
        index = ivf.IvfIndex.from_blob(rec["blob"], seg.host_rows(name, seg.n), metric, want,
                                       keep_source=not seg.on_device)
        if not np.array_equal(rec["ids_sha"], ids_fingerprint(seg.id_recs[: index.rows])):
            raise ValueError("it describes other rows")
    except (OSError, ValueError, KeyError) as exc:
        log.warning("collection %s: ignoring IVF index in %s (%s); it will be rebuilt",
                    coll.name, seg_dir, exc)
        return False
    seg.adopt_index(name, index)
    return True


def _write_index(coll: CollectionState, seg: Segment, name: str,
                 index: ann.HnswIndex | ivf.IvfIndex) -> None:
    """Persist an index next to its segment: an HNSW graph, or an IVF index's CPU form."""
    seg_dir, ids = segment_dir(coll, seg.seg_id), seg.id_recs[: index.rows]
    if isinstance(index, ivf.IvfIndex):
        write_ivf(seg_dir, name, index.blob(), ids)
    else:
        write_graph(seg_dir, name, index.graph(), ids)


def persist_graphs(coll: CollectionState) -> None:
    """Write every attached index's graph next to its segment (recovered archives' indexes:
    persisted, never rebuilt)."""
    for seg in coll.segments:
        for vname, index in seg.ann.items():
            _write_index(coll, seg, vname, index)


def pending_index(coll: CollectionState) -> tuple[Segment, str, int] | None:
    """The next (segment, vector name, rows) whose unindexed rows passed
    `indexing_threshold`; device-resident segments are searched exactly on the GPU unless
    a FAISS index (gpu.faiss_index, engine/ivf.py) is configured. An index of another kind
    than the configured one counts as none: it is replaced."""
    m, _ = hnsw_params(coll)
    want = ivf.configured()
    if not ann.available() or coll.closed:
        return None
    for seg in list(coll.segments):
        n = seg.n
        for name, vspec in coll.config.vectors.items():
            use_ivf = ivf.supports(want, vspec.distance.metric)
            if not use_ivf and (m <= 0 or seg.on_device):
                continue
            need = ann.threshold_rows(coll.config.optimizer_config.get("indexing_threshold"),
                                      seg.row_bytes(name))
            have = _same_kind(seg.ann.get(name), want if use_ivf else None)
            if need is not None and n - (have.rows if have else 0) >= need:
                return seg, name, n
    return None


def _same_kind(index: Any, want: ivf.IvfSpec | None) -> Any:
    """`index` when it is of the wanted kind (an HNSW graph for None), else None."""
    if isinstance(index, ivf.IvfIndex):
        return index if want is not None and index.kind == want.kind else None
    return index if want is None else None


def build_pending_index(coll: CollectionState) -> bool:
    """Build (or extend) one index outside every lock (rows below `n` never change), then
    swap it in. Returns False when nothing was pending. Waits while a snapshot is being
    written, before starting and between batches."""
    snapshot_gate.wait(coll)
    task = pending_index(coll)
    if task is None:
        return False
    seg, name, n = task
    spec = coll.config.vectors[name]
    want = ivf.configured()
    want = want if ivf.supports(want, spec.distance.metric) else None
    base = _same_kind(seg.ann.get(name), want)
    # a task (engine.tasks): rows added so far out of the rows this build adds
    with tasks.registry.run("index_build", coll.name, total=n - (base.rows if base else 0),
                            unit="rows") as progress:
        progress.set_phase(f"segment {seg.seg_id}, vector {name!r}")

        def advance(rows: int) -> None:
            progress.advance(rows)
            snapshot_gate.wait(coll)  # between batches: the snapshot gets the cores
            # segments sealed meanwhile are hashed now, not after this whole build: a 256 MiB
            # segment's build takes minutes on 2 cores, and a snapshot taken right after a
            # bulk load hashed ~0.75 GB in front of its archive hash (py-spy, bench.snapshots)
            while digest_sealed(coll):
                pass

        vectors = seg.host_rows(name, n).astype(np.float32, copy=False)
        trained = ivf.trainings()
        index: ann.HnswIndex | ivf.IvfIndex
        if want is not None:
            index = ivf.IvfIndex.build(vectors, spec.distance.metric, want, base=base,
                                       keep_source=not seg.on_device,
                                       progress=advance)
        else:
            index = ann.HnswIndex.build(vectors, spec.distance.metric, *hnsw_params(coll),
                                        base=base, progress=advance)
    with coll.write_lock:
        if coll.seg_by_id.get(seg.seg_id) is not seg or coll.closed:
            return True  # vacuumed or dropped meanwhile: the new segment gets its own
        seg.adopt_index(name, index)
    _write_index(coll, seg, name, index)
    if want is None:
        log.info("collection %s: HNSW index over %d rows of segment %d (%r)", coll.name,
                 index.rows, seg.seg_id, name)
    else:
        log.info("collection %s: faiss %s index over %d rows of segment %d (%r)%s", coll.name,
                 want.kind, index.rows, seg.seg_id, name,
                 ", trained" if ivf.trainings() != trained else "")
    return True


def _quantizer(coll: CollectionState, name: str) -> quantization.Quantizer | None:
    """The vector's quantizer for its current config: kept, re-wrapped, adopted from a
    recovered segment's codes or the collection directory, or trained once on a sample of
    every segment's rows (then stored durably). None: too few rows to train yet."""
    qcfg = coll.config.quantization[name]
    spec = coll.config.vectors[name]
    have: dict[str, quantization.Quantizer] = coll.quantizers  # type: ignore[attr-defined]
    q = have.get(name)
    if q is not None and q.config != qcfg:
        q = quantization.rewrap(q, qcfg) if q.config.train_key() == qcfg.train_key() else None
    if q is None:
        for seg in coll.segments:  # a snapshot's codes carry their quantizer
            rec = seg.quantized.get(name)
            if rec is not None and rec.quantizer.config.train_key() == qcfg.train_key():
                q = quantization.rewrap(rec.quantizer, qcfg)
                quantization.save(coll.path, name, q)
                break
    if q is None:
        q = quantization.load(coll.path, name, qcfg, spec.size, spec.distance.metric)
    if q is None:
        segs = [(seg, seg.n) for seg in list(coll.segments) if seg.n]
        if sum(n for _, n in segs) < quantization.TRAIN_MIN_ROWS:
            return None
        with tasks.registry.run("quantize", coll.name, total=1, unit="quantizers") as progress:
            progress.set_phase(f"training {qcfg.kind} quantization of vector {name!r}")
            rows = _training_sample(segs, name)
            q = quantization.train(qcfg, rows, spec.distance.metric)
            progress.advance(1)
        quantization.save(coll.path, name, q)
        log.info("collection %s: trained %s quantization of %r on %d rows", coll.name,
                 qcfg.kind, name, len(rows))
    have[name] = q
    return q


def _training_sample(segs: list[tuple[Segment, int]], name: str) -> np.ndarray:
    """float32 copies of at most SAMPLE_ROWS present rows of `name` across the segments: the
    rows train() would pick from all of them concatenated (deterministic), gathered without
    copying every row (peak memory: the sample, not the collection's vectors)."""
    masks = [seg.present[name][:n].copy() for seg, n in segs]  # one consistent instant
    ends = np.cumsum([np.count_nonzero(m) for m in masks])
    total = int(ends[-1])
    pick = np.sort(np.random.default_rng(0).choice(
        total, min(total, quantization.SAMPLE_ROWS), replace=False))
    bounds = np.searchsorted(pick, ends)  # picks [bounds[i-1], bounds[i]) fall in segment i
    parts = []
    for i, (seg, _) in enumerate(segs):
        lo, hi = (int(bounds[i - 1]) if i else 0), int(bounds[i])
        if hi > lo:
            first = int(ends[i - 1]) if i else 0
            rows = np.flatnonzero(masks[i])[pick[lo:hi] - first]
            parts.append(seg.vectors_of(name, rows))
    if not parts:
        return segs[0][0].vectors_of(name, np.empty(0, np.int64))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def drop_stale_codes(coll: CollectionState) -> None:
    """After a config update (caller holds the write lock): codes of vectors that are no
    longer quantized, or quantized otherwise, stop serving searches at once."""
    cfg = coll.config.quantization
    for seg in coll.segments:
        keep = {name: rec for name, rec in seg.quantized.items()
                if name in cfg and rec.quantizer.config.train_key() == cfg[name].train_key()}
        if len(keep) != len(seg.quantized):
            seg.quantized = keep


def quantize_pending(coll: CollectionState) -> bool:
    """Encode one segment's unquantized rows of one vector (training its quantizer first if
    needed), outside every lock, then swap the codes in. False: nothing was pending. Rows
    are encoded once the tail reaches a quarter of the codes (amortised O(rows))."""
    if coll.closed or not coll.config.quantization:
        return False
    snapshot_gate.wait(coll)
    for name in list(coll.config.quantization):
        _float_rows_to_host(coll, name)
        q = _quantizer(coll, name)
        if q is None:
            continue
        for seg in list(coll.segments):
            n = seg.n
            rec = seg.quantized.get(name)
            if rec is None and (rec := _stored_codes(coll, seg, name, q)) is not None:
                rec = seg.place_codes(name, rec)  # persisted next to the segment: adopted
                with coll.write_lock:
                    if coll.seg_by_id.get(seg.seg_id) is not seg or coll.closed:
                        return True
                    if seg.quantized.get(name) is None:
                        seg.quantized = {**seg.quantized, name: rec}
                    rec = seg.quantized[name]
            base = rec if rec is not None and rec.quantizer is q else None
            if rec is not None and base is None and quantization.same_codebook(rec.quantizer, q):
                base = dataclasses.replace(rec, quantizer=q)  # a snapshot's codes: kept
                with coll.write_lock:
                    if seg.quantized.get(name) is rec:
                        seg.quantized = {**seg.quantized, name: base}
                _write_codes(coll, seg, name, base)  # a restart adopts them too
            if base is not None and n - base.rows < max(QUANTIZE_MIN_ROWS, base.rows // 4):
                continue
            if n == 0:
                continue
            with tasks.registry.run("quantize", coll.name, total=n - (base.rows if base else 0),
                                    unit="rows") as progress:
                progress.set_phase(f"segment {seg.seg_id}, vector {name!r}")
                codes = quantization.encode_rows(q, seg.host_rows(name, n), np, base)
                progress.advance(n - (base.rows if base else 0))
            codes = seg.place_codes(name, codes)  # on the device when the budget fits them
            with coll.write_lock:
                if coll.seg_by_id.get(seg.seg_id) is not seg or coll.closed:
                    return True
                if coll.config.quantization.get(name) != q.config:
                    return True  # the config changed meanwhile: the next round redoes it
                seg.quantized = {**seg.quantized, name: codes}
            _write_codes(coll, seg, name, codes)
            return True
    return False


def _write_codes(coll: CollectionState, seg: Segment, name: str,
                 rec: quantization.QuantizedRows) -> None:
    q = rec.quantizer
    write_codes(segment_dir(coll, seg.seg_id), name, rec.host_codes(), seg.id_recs[: rec.rows],
                repr(q.config.train_key()), q.arrays())


def _stored_codes(coll: CollectionState, seg: Segment, name: str,
                  q: quantization.Quantizer) -> quantization.QuantizedRows | None:
    """A segment's persisted codes of `name`, if they are codes of `q` for its leading rows
    (by id fingerprint); None otherwise (they are then encoded again)."""
    seg_dir = segment_dir(coll, seg.seg_id)
    try:
        stored = read_codes(seg_dir, name)
        if stored is None:
            return None
        if str(stored["key"]) != repr(q.config.train_key()) or any(
                not np.array_equal(stored[f"q-{k}"], v) for k, v in q.arrays().items()):
            return None  # codes of an earlier quantization config: replaced, not damaged
        codes = stored["codes"]
        rows = len(codes)
        if rows > seg.n or not np.array_equal(stored["ids_sha"],
                                              ids_fingerprint(seg.id_recs[:rows])):
            raise ValueError("they describe other rows")
        return quantization.from_codes(q, codes)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("collection %s: ignoring quantized codes in %s (%s); they will be "
                    "encoded again", coll.name, seg_dir, exc)
        return None


def _float_rows_to_host(coll: CollectionState, name: str) -> None:
    """A quantized vector's float rows live in host memory on device segments (only their
    codes take device memory: 4x more vectors per GPU for int8, 32x for one-bit binary)."""
    segs = [seg for seg in list(coll.segments)
            if seg.device_home and name not in seg.host_vectors]
    if segs:
        with coll.write_lock:
            for seg in segs:
                seg.keep_on_host(name)


def memory_bytes(coll: CollectionState) -> dict[str, int]:
    """Device and host bytes of the collection's dense rows and codes (telemetry)."""
    dev = host = 0
    for seg in coll.segments:
        d, h = seg.memory_bytes()
        dev, host = dev + d, host + h
    return {"device_bytes": dev, "host_bytes": host}


def quantized_bytes(coll: CollectionState) -> dict[str, int]:
    """Bytes of codes held per vector name (telemetry)."""
    out: dict[str, int] = {}
    for seg in coll.segments:
        for name, rec in seg.quantized.items():
            out[name] = out.get(name, 0) + rec.nbytes()
    return out


def digest_sealed(coll: CollectionState) -> bool:
    """Hash one sealed segment's vectors member ahead of any snapshot (they never change
    again), so snapshot creation only hashes what is still growing. False: none left.
    The indexer runs this before any index build, so segments are hashed as they seal."""
    snapshot_gate.wait(coll)  # a digest taken now would not be in the archive being written
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
