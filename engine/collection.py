"""A collection: config + segments + WAL. Every write is WAL-append → apply, under one lock.

`write(op)` logs a typed operation (engine/operations.py) and applies it; WAL replay applies
the decoded records through the same `apply`, so replay after a crash rebuilds exactly the
acknowledged state. Filter-selected writes are resolved to explicit ids before they are
logged, which keeps replay deterministic. Where points live is the id tracker's business
(engine/id_tracker.py); flush/commit is engine/flush.py; index building engine/indexing.py;
reads go through `view()` (engine/view.py, engine/query.py).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from typing import Any

import numpy as np

from engine import flush as flushing
from engine import indexing, jsonio, strict, tasks
from engine import payload as payload_ops
from engine.coalesce import Coalescer
from engine.config import CollectionConfig, apply_update, from_state, parse_create
from engine.errors import BadRequest, NotFound, StorageError
from engine.id_tracker import split_handles
from engine.ids import PointId, ids_to_records
from engine.multivector import MultiBatch
from engine.multivector import concat as concat_multi
from engine.operations import (
    ClearPayload,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    MultiRows,
    Operation,
    OverwritePayload,
    SetPayload,
    SparseRows,
    UpdateVectors,
    Upsert,
    VectorRows,
    from_record,
    resolved,
    to_record,
)
from engine.plan import SearchSpec
from engine.search import search_batch
from engine.segment import FrozenSegment, Segment
from engine.segment_store import read_segment
from engine.sparse import concat
from engine.state import CollectionState
from engine.tables import filtered_ids, segment_mask
from engine.view import INLINE, View, WouldBlock
from gpu.device import HOST, default_device

log = logging.getLogger("quiver.collection")

SEGMENT_MAX_BYTES = 256 << 20  # seal the appendable segment past this much vector data
SEGMENT_MAX_ROWS = 1 << 22
INDEX_TYPES = {"keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid"}


class Collection(CollectionState):
    def __init__(self, name: str, path: str, config: CollectionConfig,
                 payload_schema: dict[str, Any], wal_fsync: bool = True) -> None:
        super().__init__(name, path, config, payload_schema, wal_fsync)
        self.device = default_device()  # HOST once a device failure moved it to the CPU
        self.device_fallback: str | None = None
        self.coalescer = Coalescer()
        self.quantizers: dict[str, Any] = {}  # vector name → trained quantizer (indexing.py)

    # ---- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, path: str, body: dict[str, Any], wal_fsync: bool = True
               ) -> Collection:
        config = parse_create(body)
        os.makedirs(os.path.join(path, "segments"), exist_ok=True)
        coll = cls(name, path, config, {}, wal_fsync)
        flushing.write_config(coll)
        flushing.write_state(coll, [])
        coll.wal.open_for_append()
        coll._new_appendable()
        return coll

    @classmethod
    def load(cls, name: str, path: str, wal_fsync: bool = True) -> Collection:
        for leftover in os.listdir(path):  # our own interrupted atomic writes
            if leftover.startswith(".tmp-"):
                os.unlink(os.path.join(path, leftover))
        with open(os.path.join(path, "config.json"), "rb") as f:
            cfg = jsonio.loads(f.read())
        coll = cls(name, path, from_state(cfg["config"]), cfg.get("payload_schema") or {},
                   wal_fsync)
        coll.created_at = cfg.get("created_at", coll.created_at)
        with open(os.path.join(path, "state.json"), "rb") as f:
            state = jsonio.loads(f.read())
        coll.flushed_seq = state["flushed_seq"]
        coll.next_segment_id = state["next_segment_id"]
        coll.gen = state.get("gen", 0)
        task = coll._rehydration(sum(int(m.get("n") or 0) for m in state["segments"]))
        try:
            for meta in state["segments"]:
                coll._load_segment(meta)
                if task is not None:
                    task.advance(int(meta.get("n") or 0))
        except BaseException as exc:
            if task is not None:
                tasks.registry.finish(task, exc)
            raise
        if task is not None:
            tasks.registry.finish(task)
        if not coll.segments or coll.segments[-1].sealed:
            coll._new_appendable()
        replayed = 0
        for seq, rec in coll.wal.replay(coll.flushed_seq):
            coll.apply(from_record(rec), seq)
            replayed += 1
        coll.wal.open_for_append()
        indexing.attach_graphs(coll)  # replayed segments reuse their ids: graphs may still fit
        flushing.remove_stray_segments(coll)
        if replayed:
            log.info("collection %s: replayed %d WAL records", name, replayed)
        return coll

    def _load_segment(self, meta: dict[str, Any]) -> None:
        seg_dir = os.path.join(self.path, "segments", str(meta["id"]))
        data = read_segment(seg_dir, meta, self.config.vectors, self.sparse_names,
                            self.config.multivectors)
        seg = Segment.from_arrays(meta["id"], self.config.vectors, self.device, data,
                                  bool(meta.get("sealed")), set(self.config.quantization))
        seg.flushed_n = seg.n
        seg.dirty = seg.payloads_dirty = False
        self._register(seg)
        self.seg_meta[seg.seg_id] = dict(meta)

    def _register(self, seg: Segment) -> None:
        if not seg.deleted[: seg.n].any():  # the common case: no per-row lists to build
            self.ids.assign_range(seg.ids, seg.seg_id)
        else:
            live = np.flatnonzero(~seg.deleted[: seg.n])
            self.ids.assign([seg.ids[r] for r in live.tolist()], seg.seg_id, live.tolist())
        self.segments.append(seg)
        self.seg_by_id[seg.seg_id] = seg

    @classmethod
    def build(cls, name: str, path: str, config_state: dict[str, Any],
              payload_schema: dict[str, Any], segments: list[tuple[dict[str, Any], bool]],
              seq: int, wal_fsync: bool = True) -> Collection:
        """Write a complete collection directory from host arrays (snapshot recovery), its WAL
        continuing after `seq`. Segments whose data carries a `blob` keep their rows in that
        archive under `path`/blobs (only their masks and payloads are written). Returns the
        live collection (Catalog.install moves it)."""
        os.makedirs(os.path.join(path, "segments"), exist_ok=True)
        coll = cls(name, path, from_state(config_state), dict(payload_schema), wal_fsync)
        task = None
        try:
            flushing.write_config(coll)
            task = coll._rehydration(sum(len(data["id_recs"]) for data, _ in segments))
            for data, sealed in segments:
                seg = Segment.from_arrays(coll.next_segment_id, coll.config.vectors, coll.device,
                                          data, sealed, set(coll.config.quantization))
                if task is not None:
                    task.advance(seg.n)
                if seg.blob is not None:  # it stays in the archive until it changes
                    seg.flushed_n = seg.n
                    seg.dirty = seg.payloads_dirty = False
                    coll.seg_meta[seg.seg_id] = {"id": seg.seg_id, "n": seg.n, "gen": None,
                                                 "payload_gen": None, "sealed": True,
                                                 "blob": seg.blob}
                coll._register(seg)
                coll.next_segment_id += 1
            if not coll.segments or coll.segments[-1].sealed:
                coll._new_appendable()
            coll.wal.last_seq = seq
            coll.wal.open_for_append()
            coll.flush()
            indexing.persist_graphs(coll)  # the archive's indexes: persisted, never rebuilt
        except BaseException as exc:
            coll.close(flush=False)  # release the WAL file (e.g. disk full midway)
            if task is not None:
                tasks.registry.finish(task, exc)
            raise
        if task is not None:
            tasks.registry.finish(task)
        return coll

    def _rehydration(self, rows: int) -> tasks.Task | None:
        """A task (engine.tasks, device_rehydrate) counting the rows copied onto the device
        while segments load; none when they stay on the host."""
        if not rows or not self.device.available:
            return None
        return tasks.registry.start("device_rehydrate", self.name, total=rows, unit="rows",
                                    parent=tasks.current())

    def relocate(self, path: str) -> None:
        """The collection's directory was renamed (open files stay valid)."""
        self.path = path
        self.wal.dir = os.path.join(path, "wal")

    def snapshot_view(self) -> tuple[int, dict[str, Any], dict[str, Any], list[FrozenSegment]]:
        """Freeze the whole collection at one WAL sequence number. Holds the write lock only
        while row counts are recorded and the small mutable arrays copied."""
        with self.write_lock:
            return (self.wal.last_seq, copy.deepcopy(self.config.to_state()),
                    copy.deepcopy(self.payload_schema), [s.freeze() for s in self.segments])

    def _new_appendable(self) -> Segment:
        # quantized vectors keep their float rows on the host from the start: only their
        # codes take device memory (engine/indexing.py places them)
        seg = Segment(self.next_segment_id, self.config.vectors, self.device,
                      sparse=self.sparse_names, multi=self.config.multivectors,
                      host_vectors=set(self.config.quantization))
        self.next_segment_id += 1
        self.segments.append(seg)
        self.seg_by_id[seg.seg_id] = seg
        return seg

    @property
    def sparse_names(self) -> tuple[str, ...]:
        return tuple(self.config.sparse_vectors)

    @property
    def appendable(self) -> Segment:
        return self.segments[-1]

    def flush(self) -> None:
        flushing.flush(self)

    def close(self, flush: bool = True) -> None:
        if flush and not self.closed:
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the WAL still holds everything
                log.exception("flush on close failed for %s", self.name)
        with self.write_lock:
            self.closed = True
            self.wal.close()

    # ---- reads -----------------------------------------------------------------------------

    def view(self, ids: list[PointId] | None = None) -> View:
        """The segments and row counts at this instant (and where `ids` live, looked up in the
        same instant), for a read that then runs without the lock. On the API's event loop
        (INLINE) it never waits for the lock: WouldBlock, and the read reruns in a thread."""
        lock = self.write_lock
        if not lock.acquire(blocking=not INLINE.get()):
            raise WouldBlock(f"collection {self.name}: write lock held")
        try:
            return View([(s, s.n) for s in self.segments], dict(self.seg_by_id), self.seg_by_id,
                        self.ids, self.config, self.payload_schema, self.fall_back_to_cpu,
                        self.ids.handles(ids) if ids else [])
        finally:
            lock.release()

    def search(self, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
        """Searches of one request: on a device-resident collection concurrent requests are
        coalesced into batches (engine/coalesce.py); on the CPU each runs as it comes."""
        for seg in self.segments:  # no generator: this runs on every search
            if seg.on_device:
                return self.coalescer.search(specs, self._search_now)
        return self._search_now(specs)

    def _search_now(self, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
        return search_batch(self.view(), specs)

    # ---- writes ------------------------------------------------------------------------------

    def write(self, op: Operation) -> int:
        """Resolve the op's selection, log it (durable first), apply it (then visible).
        Returns its WAL sequence number."""
        with self.write_lock:
            if op.filter is not None:
                op = dataclasses.replace(op, ids=filtered_ids(self.view(), op.filter),
                                         filter=None)
            elif op.requires_existing:
                _, missing = self.ids.locate(op.ids)
                if missing:
                    raise NotFound(f"No point with id {missing[0]} found")
            if isinstance(op, Upsert | UpdateVectors) and op.conditional:
                op = self._resolve_conditions(op)
            seq = self.wal.append(to_record(op))
            self.apply(op, seq)
            self.last_write = time.monotonic()
            return seq

    def _resolve_conditions(self, op: Upsert | UpdateVectors) -> Upsert | UpdateVectors:
        """update_mode / update_filter → the plain op over the points really written (Qdrant:
        insert_only skips existing points, update_only skips new ones, an existing point that
        does not match update_filter keeps its current state; new points ignore the filter)."""
        handles, missing = self.ids.locate(op.ids)
        absent = set(missing)
        exists = np.fromiter((i not in absent for i in op.ids), bool, len(op.ids))
        keep = np.ones(len(op.ids), bool)
        mode = op.update_mode if isinstance(op, Upsert) else "update_only"
        if mode == "insert_only":
            keep &= ~exists
        elif mode == "update_only":
            keep &= exists
        if op.update_filter is not None and exists.any():
            view = self.view()
            matched = np.zeros(len(handles), bool)
            for sid, rows, pos in split_handles(handles):
                seg = self.seg_by_id[sid]
                matched[pos] = segment_mask(view, seg, seg.n, op.update_filter)[rows]
            existing_at = np.flatnonzero(exists)  # handles are in the order of the found ids
            keep[existing_at[~matched]] = False
        return resolved(op, keep)

    def apply(self, op: Operation, seq: int) -> None:
        """Apply a logged op (live write or WAL replay). Caller holds write_lock."""
        if isinstance(op, Upsert):
            self._upsert_rows(op.ids, op.vectors, op.payloads, seq, op.sparse, op.multi)
        elif isinstance(op, DeletePoints):
            self._delete_ids(op.ids)
        elif isinstance(op, SetPayload | OverwritePayload | DeletePayload | ClearPayload):
            self._payload_op(op, seq)
        elif isinstance(op, UpdateVectors):
            self._update_vectors(op.ids, op.vectors, seq, op.sparse, op.multi)
        elif isinstance(op, DeleteVectors):
            self._delete_vectors(op.ids, op.names, seq)
        else:
            raise ValueError(f"unknown operation {op!r}")

    def _segments_of(self, ids: list[PointId]) -> list[tuple[Segment, np.ndarray, np.ndarray]]:
        """Existing ids grouped by segment → [(segment, rows, positions among the found)]."""
        handles, _ = self.ids.locate(ids)
        return [(self.seg_by_id[sid], rows, pos) for sid, rows, pos in split_handles(handles)]

    def _upsert_rows(self, ids: list[PointId], vectors: dict[str, VectorRows],
                     payloads: list[dict[str, Any]], seq: int,
                     sparse: dict[str, SparseRows] | None = None,
                     multi: dict[str, MultiRows] | None = None) -> None:
        if not ids:
            return
        for seg, rows, _ in self._segments_of(ids):
            seg.delete_rows(rows)
        seg = self.appendable
        rows = seg.append(ids, ids_to_records(ids),
                          {name: (v.positions, v.values) for name, v in vectors.items()},
                          payloads, seq,
                          {name: (v.positions, v.rows) for name, v in (sparse or {}).items()},
                          {name: (v.positions, v.rows) for name, v in (multi or {}).items()})
        self.ids.assign(ids, seg.seg_id, rows.tolist())
        self._warm_indexes(seg)
        if self._segment_full(seg):
            seg.sealed = True
            seg.dirty = True
            self._new_appendable()

    def _segment_full(self, seg: Segment) -> bool:
        row_bytes = sum(s.size * 4 for s in self.config.vectors.values()) or 4
        max_kb = self.config.optimizer_config.get("max_segment_size")
        limit = max_kb * 1024 if isinstance(max_kb, int) and max_kb > 0 else SEGMENT_MAX_BYTES
        sparse_bytes = sum(store.nnz * 8 for store in seg.sparse.values())  # index + value
        sparse_bytes += sum(store.ntok * store.dim * 4 for store in seg.multi.values())
        return (seg.n * row_bytes + sparse_bytes >= limit or seg.n >= SEGMENT_MAX_ROWS)

    def _delete_ids(self, ids: list[PointId]) -> None:
        for seg, rows, _ in self._segments_of(ids):
            seg.delete_rows(rows)
        self.ids.remove(ids)

    def _payload_op(self, op: Operation, seq: int) -> None:
        for seg, rows, _ in self._segments_of(op.ids):
            olds = [seg.payloads[r] for r in rows.tolist()]
            if isinstance(op, SetPayload):
                new = [payload_ops.set_payload(p, op.payload, op.key) for p in olds]
            elif isinstance(op, OverwritePayload):
                new = [dict(op.payload) for _ in olds]
            elif isinstance(op, DeletePayload):
                new = [payload_ops.delete_keys(p, op.keys) for p in olds]
            else:
                new = [{} for _ in olds]
            seg.set_payloads(rows, new, seq)
            self._warm_indexes(seg)

    def _update_vectors(self, ids: list[PointId], updates: dict[str, VectorRows],
                        seq: int, sparse_updates: dict[str, SparseRows] | None = None,
                        multi_updates: dict[str, MultiRows] | None = None) -> None:
        """A point whose vectors change moves to the appendable segment (rows are immutable)."""
        merged: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        merged_sparse: dict[str, tuple[list[np.ndarray], list[Any]]] = {}
        merged_multi: dict[str, tuple[list[np.ndarray], list[MultiBatch]]] = {}
        order: list[int] = []
        payloads: list[dict[str, Any]] = []
        for seg, rows, pos in self._segments_of(ids):
            for name in self.config.vectors:
                has = seg.present[name][rows]
                if has.any():
                    m = merged.setdefault(name, ([], []))
                    m[0].append(pos[has])
                    m[1].append(seg.vectors_of(name, rows[has]))
            for name in self.sparse_names:
                has = seg.present[name][rows]
                if has.any():
                    ms = merged_sparse.setdefault(name, ([], []))
                    ms[0].append(pos[has])
                    ms[1].append(seg.sparse_of(name, rows[has]))
            for name in self.config.multivectors:
                has = seg.present[name][rows]
                if has.any():
                    mm = merged_multi.setdefault(name, ([], []))
                    mm[0].append(pos[has])
                    mm[1].append(seg.multi_of(name, rows[has]))
            order.extend(pos.tolist())
            payloads.extend(seg.payloads[r] for r in rows.tolist())
        # positions are indices into `ids`; rebuild per-name arrays in `ids` order
        final: dict[str, VectorRows] = {}
        for name in self.config.vectors:
            pos_parts, arr_parts = merged.get(name, ([], []))
            cur_pos = np.concatenate(pos_parts) if pos_parts else np.empty(0, np.int64)
            cur_arr = (np.concatenate(arr_parts) if arr_parts
                       else np.empty((0, self.config.vectors[name].size), np.float32))
            if name in updates:
                upos, uarr = updates[name].positions, updates[name].values
                keep = ~np.isin(cur_pos, upos)
                cur_pos = np.concatenate([cur_pos[keep], upos])
                cur_arr = np.concatenate([cur_arr[keep], uarr])
            final[name] = VectorRows(cur_pos, cur_arr)
        ord_arr = np.array(order, dtype=np.int64)
        inv = np.empty(len(ids), dtype=np.int64)
        inv[ord_arr] = np.arange(len(ord_arr))
        final = {name: VectorRows(inv[v.positions], v.values) for name, v in final.items()}
        final_sparse: dict[str, SparseRows] = {}
        for name in self.sparse_names:
            pos_parts, batches = merged_sparse.get(name, ([], []))
            cur_pos = np.concatenate(pos_parts) if pos_parts else np.empty(0, np.int64)
            cur = concat(batches)
            upd = (sparse_updates or {}).get(name)
            if upd is not None:
                kept = np.flatnonzero(~np.isin(cur_pos, upd.positions))
                cur_pos = np.concatenate([cur_pos[kept], upd.positions])
                cur = concat([cur.take(kept), upd.rows])
            final_sparse[name] = SparseRows(inv[cur_pos], cur)
        final_multi: dict[str, MultiRows] = {}
        for name, mspec in self.config.multivectors.items():
            mpos_parts, mbatches = merged_multi.get(name, ([], []))
            mpos = np.concatenate(mpos_parts) if mpos_parts else np.empty(0, np.int64)
            mcur = concat_multi(mbatches, mspec.size)
            mupd = (multi_updates or {}).get(name)
            if mupd is not None:
                kept = np.flatnonzero(~np.isin(mpos, mupd.positions))
                mpos = np.concatenate([mpos[kept], mupd.positions])
                mcur = concat_multi([mcur.take(kept), mupd.rows], mspec.size)
            final_multi[name] = MultiRows(inv[mpos], mcur)
        self._upsert_rows([ids[i] for i in order], final, payloads, seq, final_sparse,
                          final_multi)

    def _delete_vectors(self, ids: list[PointId], names: list[str], seq: int) -> None:
        for seg, rows, _ in self._segments_of(ids):
            seg.drop_vectors(rows, names, seq)

    def _warm_indexes(self, seg: Segment) -> None:
        """Indexed fields keep their columns current at write time, so reads never rebuild."""
        for field in self.payload_schema:
            seg.column(field)

    # ---- config & payload indexes -----------------------------------------------------------

    def update_config(self, body: dict[str, Any]) -> None:
        with self.write_lock:
            self.config = apply_update(self.config, body)
            flushing.write_config(self)
            indexing.drop_stale_codes(self)  # the indexer re-quantizes in the background

    def create_index(self, field: str, schema: Any) -> None:
        if not isinstance(field, str) or not field:
            raise BadRequest("`field_name` must be a non-empty string")
        payload_ops.parse_path(field)
        type_name = schema.get("type") if isinstance(schema, dict) else schema
        if type_name not in INDEX_TYPES:
            raise BadRequest(f"unknown field_schema {schema!r}")
        with self.write_lock:
            strict.check_index_count(self, field)
            self.payload_schema[field] = {"type": type_name,
                                          "params": schema if isinstance(schema, dict) else None}
            flushing.write_config(self)
            for seg in self.segments:
                seg.column(field)

    def delete_index(self, field: str) -> None:
        with self.write_lock:
            if self.payload_schema.pop(field, None) is not None:
                flushing.write_config(self)

    # ---- vacuum ------------------------------------------------------------------------------

    def vacuum(self) -> int:
        """Rewrite segments whose deleted fraction passed `deleted_threshold` without their
        deleted rows. Logical state is unchanged (no WAL record); the next flush persists the
        new segment and drops the old one. Returns the number of segments rewritten."""
        opt = self.config.optimizer_config
        threshold = float(opt.get("deleted_threshold") or 0.2)
        min_rows = int(opt.get("vacuum_min_vector_number") or 1000)
        done = 0
        with self.flush_lock, self.write_lock:  # never between a flush's commit and cleanup
            for i, seg in enumerate(list(self.segments)):
                if seg.n < min_rows or seg.deleted_fraction() <= threshold:
                    continue
                new = Segment.compacted(seg, self.next_segment_id)
                self.next_segment_id += 1
                self.segments[i] = new
                self.seg_by_id[new.seg_id] = new
                del self.seg_by_id[seg.seg_id]
                self.ids.assign_range(new.ids, new.seg_id)
                self._warm_indexes(new)
                done += 1
        return done

    # ---- background work (the catalog's indexer thread; engine/indexing.py) -------------------

    def build_pending_index(self) -> bool:
        return indexing.build_pending_index(self)

    def digest_sealed(self) -> bool:
        return indexing.digest_sealed(self)

    def quantize_pending(self) -> bool:
        return indexing.quantize_pending(self)

    # ---- device placement --------------------------------------------------------------------

    def fall_back_to_cpu(self, reason: str) -> None:
        """A device failure hit this collection: move every segment to host memory and serve
        from the CPU from now on (logged once per collection). Unless the device merely ran
        out of memory, it is disabled for every collection."""
        with self.write_lock:
            failed = self.device
            if not failed.available and not any(s.on_device for s in self.segments):
                return
            log.error("collection %s: device failure, falling back to CPU: %s", self.name, reason)
            try:
                for seg in self.segments:
                    seg.move_to_host()
            except Exception as exc:  # noqa: BLE001 - the device context itself is gone
                raise StorageError(
                    f"device failed and collection {self.name} could not be copied back to host "
                    f"memory ({exc}); its data is safe on disk: restart with gpu.enabled=false"
                ) from exc
            self.device = HOST
            self.device_fallback = reason
        if "OutOfMemory" not in reason:
            failed.disable(reason)

    def device_info(self) -> dict[str, Any]:
        on_dev = sum(1 for s in self.segments if s.on_device)
        return {"device": self.device.name if on_dev else "cpu",
                "segments_on_device": on_dev, "segments_on_host": len(self.segments) - on_dev,
                **({"fallback_reason": self.device_fallback} if self.device_fallback else {})}

    # ---- info --------------------------------------------------------------------------------

    def points_count(self) -> int:
        return sum(seg.live_count() for seg in self.segments)

    def indexed_vectors(self) -> int:
        return indexing.indexed_vectors(self)

    def info(self) -> dict[str, Any]:
        schema = {}
        for field, entry in self.payload_schema.items():
            count = 0
            for seg in self.segments:
                n = seg.n
                col = seg.column(field)
                count += int(np.count_nonzero(col.non_empty(n) & ~seg.deleted[:n]))
            item: dict[str, Any] = {"data_type": entry["type"], "points": count}
            if isinstance(entry.get("params"), dict):
                item["params"] = entry["params"]
            schema[field] = item
        return {
            "status": "yellow" if indexing.pending_index(self) else "green",  # yellow: indexing
            "optimizer_status": "ok",
            "indexed_vectors_count": self.indexed_vectors(),
            "points_count": self.points_count(),
            "segments_count": len(self.segments),
            "config": self.config.to_json(),
            "payload_schema": schema,
        }
