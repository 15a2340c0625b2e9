"""A collection: config + segments + WAL. Every write is WAL-append → apply, under one lock.

`apply(op, seq)` is shared by live writes and WAL replay, so replay after a crash rebuilds
exactly the acknowledged state. Filter-selected writes are resolved to explicit ids before
they are logged, which keeps replay deterministic.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import threading
import time
from typing import Any

import numpy as np

from engine import ann, jsonio
from engine import payload as payload_ops
from engine.coalesce import Coalescer
from engine.config import CollectionConfig, apply_update, from_state, parse_create
from engine.durable import fsync_dir, write_atomic
from engine.errors import BadRequest, NotFound, StorageError
from engine.filters import parse_filter
from engine.ids import PointId, ids_to_records, parse_ids
from engine.npy import npy_sha256
from engine.points_input import parse_points, parse_vector_updates
from engine.segment import FrozenSegment, Segment
from engine.segment_store import (
    ids_fingerprint,
    prune_blobs,
    prune_generations,
    read_graph,
    read_segment,
    write_graph,
    write_segment,
)
from engine.wal import Wal
from gpu import xp as xpmod
from gpu.xp import get_xp, to_host

log = logging.getLogger("quiver.collection")

ROW_BITS = 32
ROW_MASK = (1 << ROW_BITS) - 1
SEGMENT_MAX_BYTES = 256 << 20  # seal the appendable segment past this much vector data
SEGMENT_MAX_ROWS = 1 << 22
INDEX_TYPES = {"keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid"}


def handle(seg_id: int, row: int) -> int:
    return (seg_id << ROW_BITS) | row


class Collection:
    def __init__(self, name: str, path: str, config: CollectionConfig,
                 payload_schema: dict[str, Any], wal_fsync: bool = True) -> None:
        self.name = name
        self.path = path
        self.config = config
        self.payload_schema = payload_schema
        self.xp = get_xp()
        self.device_fallback: str | None = None
        self.coalescer = Coalescer()
        self.write_lock = threading.RLock()
        self.flush_lock = threading.Lock()
        self.segments: list[Segment] = []
        self.seg_by_id: dict[int, Segment] = {}
        self.id_map: dict[PointId, int] = {}
        self.next_segment_id = 0
        self.flushed_seq = 0
        self.gen = 0
        self.seg_meta: dict[int, dict[str, Any]] = {}  # last committed per-segment metadata
        self.wal = Wal(os.path.join(path, "wal"), fsync=wal_fsync)
        self.last_write = time.monotonic()
        self.created_at = time.time()
        self._closed = False

    # ---- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, path: str, body: dict[str, Any], wal_fsync: bool = True
               ) -> Collection:
        config = parse_create(body)
        os.makedirs(os.path.join(path, "segments"), exist_ok=True)
        coll = cls(name, path, config, {}, wal_fsync)
        coll._write_config()
        coll._write_state([])
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
        for meta in state["segments"]:
            coll._load_segment(meta)
        if not coll.segments or coll.segments[-1].sealed:
            coll._new_appendable()
        replayed = 0
        for seq, op in coll.wal.replay(coll.flushed_seq):
            coll.apply(op, seq)
            replayed += 1
        coll.wal.open_for_append()
        coll._attach_graphs()  # replayed segments reuse their ids: their graphs may still fit
        coll._remove_stray_segments()
        if replayed:
            log.info("collection %s: replayed %d WAL records", name, replayed)
        return coll

    def _load_segment(self, meta: dict[str, Any]) -> None:
        seg_dir = os.path.join(self.path, "segments", str(meta["id"]))
        data = read_segment(seg_dir, meta, self.config.vectors)
        seg = Segment.from_arrays(meta["id"], self.config.vectors, self.xp, data,
                                  bool(meta.get("sealed")))
        seg.flushed_n = seg.n
        seg.dirty = seg.payloads_dirty = False
        self._register(seg)
        self.seg_meta[seg.seg_id] = dict(meta)

    def _attach_graphs(self) -> None:
        """After WAL replay: persisted HNSW graphs whose rows (by id fingerprint) are still
        the segment's leading rows are attached; anything else is rebuilt in the background."""
        if not ann.available():
            return
        for seg in self.segments:
            seg_dir = os.path.join(self.path, "segments", str(seg.seg_id))
            for name, spec in self.config.vectors.items():
                try:
                    graph = read_graph(seg_dir, name)
                    if graph is None or seg.on_device:
                        continue
                    rows = len(graph["levels"])
                    if rows > seg.n or not np.array_equal(
                            graph["ids_sha"], ids_fingerprint(seg.id_recs[:rows])):
                        raise ValueError("it describes other rows")
                    vectors = to_host(seg.vectors[name][:rows])
                    seg.adopt_index(name, ann.HnswIndex.from_graph(
                        vectors, graph, spec.distance.metric, *self._hnsw()))
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("collection %s: ignoring HNSW graph in %s (%s); it will be "
                                "rebuilt", self.name, seg_dir, exc)

    def _hnsw(self) -> tuple[int, int]:
        cfg = self.config.hnsw_config
        return int(cfg.get("m") or 0), int(cfg.get("ef_construct") or 100)

    def _register(self, seg: Segment) -> None:
        base = seg.seg_id << ROW_BITS
        if not seg.deleted[: seg.n].any():  # the common case: no per-row lists to build
            self.id_map.update(zip(seg.ids, range(base, base + seg.n), strict=True))
        else:
            live = np.flatnonzero(~seg.deleted[: seg.n])
            self.id_map.update(zip([seg.ids[r] for r in live.tolist()], (live + base).tolist(),
                                   strict=True))
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
        try:
            coll._write_config()
            for data, sealed in segments:
                seg = Segment.from_arrays(coll.next_segment_id, coll.config.vectors, coll.xp,
                                          data, sealed)
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
            for seg in coll.segments:  # the archive's indexes: persisted, never rebuilt
                for vname, index in seg.ann.items():
                    write_graph(os.path.join(path, "segments", str(seg.seg_id)), vname,
                                index.graph(), seg.id_recs[: index.rows])
        except BaseException:
            coll.close(flush=False)  # release the WAL file (e.g. disk full midway)
            raise
        return coll

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

    def _remove_stray_segments(self) -> None:
        """Delete segment directories neither committed in state.json nor live in memory
        (vacuumed or never-committed segments), and stale file generations."""
        seg_root = os.path.join(self.path, "segments")
        keep = set(self.seg_meta) | set(self.seg_by_id)
        for name in os.listdir(seg_root):
            if not name.isdigit() or int(name) not in keep:
                shutil.rmtree(os.path.join(seg_root, name), ignore_errors=True)
        for seg_id, meta in self.seg_meta.items():
            prune_generations(os.path.join(seg_root, str(seg_id)), meta["gen"],
                              meta["payload_gen"])
        prune_blobs(self.path, self.seg_meta.values())

    def _new_appendable(self) -> Segment:
        seg = Segment(self.next_segment_id, self.config.vectors, self.xp)
        self.next_segment_id += 1
        self.segments.append(seg)
        self.seg_by_id[seg.seg_id] = seg
        return seg

    @property
    def appendable(self) -> Segment:
        return self.segments[-1]

    def _write_config(self) -> None:
        data = {"name": self.name, "config": self.config.to_state(),
                "payload_schema": self.payload_schema, "created_at": self.created_at}
        write_atomic(os.path.join(self.path, "config.json"), jsonio.dumps(data))

    def _write_state(self, metas: list[dict[str, Any]]) -> None:
        state = {"flushed_seq": self.flushed_seq, "next_segment_id": self.next_segment_id,
                 "gen": self.gen, "segments": metas}
        write_atomic(os.path.join(self.path, "state.json"), jsonio.dumps(state))

    # ---- write path ------------------------------------------------------------------------

    def _log_and_apply(self, op: dict[str, Any]) -> int:
        """Caller holds write_lock. Durable first, then visible."""
        seq = self.wal.append(op)
        self.apply(op, seq)
        self.last_write = time.monotonic()
        return seq

    def apply(self, op: dict[str, Any], seq: int) -> None:
        kind = op["op"]
        ids = op.get("ids") or []
        if kind == "upsert":
            vectors = {name[2:]: (op["arrays"].get("p:" + name[2:]), arr)
                       for name, arr in op["arrays"].items() if name.startswith("v:")}
            for name, (pos, arr) in list(vectors.items()):
                if pos is None:
                    vectors[name] = (np.arange(len(ids), dtype=np.int64), arr)
            self._upsert_rows(ids, vectors, op["payloads"], seq)
        elif kind == "delete":
            self._delete_ids(ids)
        elif kind in ("set_payload", "overwrite_payload", "delete_payload", "clear_payload"):
            self._payload_op(kind, ids, op, seq)
        elif kind == "update_vectors":
            self._update_vectors(ids, op, seq)
        elif kind == "delete_vectors":
            self._delete_vectors(ids, op["names"], seq)
        else:
            raise ValueError(f"unknown WAL op {kind}")

    def _locate(self, ids: list[PointId]) -> tuple[np.ndarray, list[PointId]]:
        """ids → handles of existing points (and the missing ids)."""
        found = [self.id_map.get(i) for i in ids]
        missing = [i for i, h in zip(ids, found, strict=True) if h is None]
        handles = np.array([h for h in found if h is not None], dtype=np.int64)
        return handles, missing

    def _by_segment(self, handles: np.ndarray) -> list[tuple[Segment, np.ndarray, np.ndarray]]:
        """Group handles by segment → [(segment, rows, positions in `handles`)]."""
        if len(handles) == 0:
            return []
        seg_ids = handles >> ROW_BITS
        rows = handles & ROW_MASK
        out = []
        for sid in np.unique(seg_ids).tolist():
            sel = np.flatnonzero(seg_ids == sid)
            out.append((self.seg_by_id[sid], rows[sel], sel))
        return out

    def _upsert_rows(self, ids: list[PointId], vectors: dict[str, tuple[np.ndarray, np.ndarray]],
                     payloads: list[dict[str, Any]], seq: int) -> None:
        if not ids:
            return
        old, _ = self._locate(ids)
        for seg, rows, _ in self._by_segment(old):
            seg.delete_rows(rows)
        seg = self.appendable
        rows = seg.append(ids, ids_to_records(ids), vectors, payloads, seq)
        self.id_map.update(zip(ids, (rows + (seg.seg_id << ROW_BITS)).tolist(), strict=True))
        self._warm_indexes(seg)
        if self._segment_full(seg):
            seg.sealed = True
            seg.dirty = True
            self._new_appendable()

    def _segment_full(self, seg: Segment) -> bool:
        row_bytes = sum(s.size * 4 for s in self.config.vectors.values()) or 4
        max_kb = self.config.optimizer_config.get("max_segment_size")
        limit = max_kb * 1024 if isinstance(max_kb, int) and max_kb > 0 else SEGMENT_MAX_BYTES
        return seg.n * row_bytes >= limit or seg.n >= SEGMENT_MAX_ROWS

    def _delete_ids(self, ids: list[PointId]) -> None:
        handles, _ = self._locate(ids)
        for seg, rows, _ in self._by_segment(handles):
            seg.delete_rows(rows)
        for i in ids:
            self.id_map.pop(i, None)

    def _payload_op(self, kind: str, ids: list[PointId], op: dict[str, Any], seq: int) -> None:
        handles, _ = self._locate(ids)
        for seg, rows, _ in self._by_segment(handles):
            olds = [seg.payloads[r] for r in rows.tolist()]
            if kind == "set_payload":
                new = [payload_ops.set_payload(p, op["payload"], op.get("key")) for p in olds]
            elif kind == "overwrite_payload":
                new = [dict(op["payload"]) for _ in olds]
            elif kind == "delete_payload":
                new = [payload_ops.delete_keys(p, op["keys"]) for p in olds]
            else:
                new = [{} for _ in olds]
            seg.set_payloads(rows, new, seq)
            self._warm_indexes(seg)

    def _update_vectors(self, ids: list[PointId], op: dict[str, Any], seq: int) -> None:
        """A point whose vectors change moves to the appendable segment (rows are immutable)."""
        handles, _ = self._locate(ids)
        updates = {name[2:]: (op["arrays"]["p:" + name[2:]], arr)
                   for name, arr in op["arrays"].items() if name.startswith("v:")}
        merged: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        order: list[int] = []
        payloads: list[dict[str, Any]] = []
        for seg, rows, pos in self._by_segment(handles):
            for name in self.config.vectors:
                has = seg.present[name][rows]
                if has.any():
                    m = merged.setdefault(name, ([], []))
                    m[0].append(pos[has])
                    m[1].append(seg.vectors_of(name, rows[has]))
            order.extend(pos.tolist())
            payloads.extend(seg.payloads[r] for r in rows.tolist())
        # positions are indices into `ids`; rebuild per-name arrays in `ids` order
        final: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in self.config.vectors:
            pos_parts, arr_parts = merged.get(name, ([], []))
            cur_pos = np.concatenate(pos_parts) if pos_parts else np.empty(0, np.int64)
            cur_arr = (np.concatenate(arr_parts) if arr_parts
                       else np.empty((0, self.config.vectors[name].size), np.float32))
            if name in updates:
                upos, uarr = updates[name]
                keep = ~np.isin(cur_pos, upos)
                cur_pos = np.concatenate([cur_pos[keep], upos])
                cur_arr = np.concatenate([cur_arr[keep], uarr])
            final[name] = (cur_pos, cur_arr)
        ord_arr = np.array(order, dtype=np.int64)
        inv = np.empty(len(ids), dtype=np.int64)
        inv[ord_arr] = np.arange(len(ord_arr))
        for name, (p, a) in final.items():
            final[name] = (inv[p], a)
        self._upsert_rows([ids[i] for i in order], final, payloads, seq)

    def _delete_vectors(self, ids: list[PointId], names: list[str], seq: int) -> None:
        handles, _ = self._locate(ids)
        for seg, rows, _ in self._by_segment(handles):
            seg.drop_vectors(rows, names, seq)

    def _warm_indexes(self, seg: Segment) -> None:
        """Indexed fields keep their columns current at write time, so reads never rebuild."""
        for field in self.payload_schema:
            seg.column(field)

    # ---- public write operations ---------------------------------------------------------

    def upsert(self, body: dict[str, Any]) -> int:
        ids, vectors, payloads = parse_points(self.config, body)
        arrays: dict[str, np.ndarray] = {}
        for name, (pos, arr) in vectors.items():
            arrays["v:" + name] = arr
            if len(pos) != len(ids):
                arrays["p:" + name] = pos
        op = {"op": "upsert", "ids": ids, "payloads": payloads, "arrays": arrays}
        with self.write_lock:
            return self._log_and_apply(op)

    def _select_ids(self, body: dict[str, Any], field: str = "points",
                    require_existing: bool = False) -> list[PointId]:
        """Points chosen by an id list or a filter (under write_lock)."""
        sel = body.get(field)
        flt = body.get("filter")
        if isinstance(sel, dict) and ("points" in sel or "filter" in sel):  # PointsSelector
            flt = sel.get("filter", flt)
            sel = sel.get("points")
        if sel is not None:
            ids = parse_ids(sel)
            if require_existing:
                _, missing = self._locate(ids)
                if missing:
                    raise NotFound(f"No point with id {missing[0]} found")
            return ids
        if flt is not None:
            from engine.query import filtered_ids  # noqa: PLC0415 - avoid an import cycle
            return filtered_ids(self, parse_filter(flt))
        raise BadRequest(f"request needs `{field}` or `filter`")

    def delete_points(self, body: dict[str, Any]) -> int:
        with self.write_lock:
            ids = self._select_ids(body)
            return self._log_and_apply({"op": "delete", "ids": ids})

    def payload_write(self, kind: str, body: dict[str, Any]) -> int:
        if kind not in ("set_payload", "overwrite_payload", "delete_payload", "clear_payload"):
            raise ValueError(f"unknown payload operation {kind!r}")  # before the WAL sees it
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        op: dict[str, Any] = {"op": kind}
        if kind in ("set_payload", "overwrite_payload"):
            pl = body.get("payload")
            if not isinstance(pl, dict):
                raise BadRequest("`payload` must be an object")
            op["payload"] = pl
            if kind == "set_payload" and body.get("key") is not None:
                if not isinstance(body["key"], str):
                    raise BadRequest("`key` must be a string")
                payload_ops.parse_path(body["key"])
                op["key"] = body["key"]
        elif kind == "delete_payload":
            keys = body.get("keys")
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise BadRequest("`keys` must be a list of strings")
            for k in keys:
                payload_ops.parse_path(k)
            op["keys"] = keys
        with self.write_lock:
            op["ids"] = self._select_ids(body, require_existing=True)
            return self._log_and_apply(op)

    def update_vectors(self, body: dict[str, Any]) -> int:
        ids, vectors = parse_vector_updates(self.config, body)
        arrays: dict[str, np.ndarray] = {}
        for name, (pos, arr) in vectors.items():
            arrays["v:" + name] = arr
            arrays["p:" + name] = pos
        with self.write_lock:
            _, missing = self._locate(ids)
            if missing:
                raise NotFound(f"No point with id {missing[0]} found")
            return self._log_and_apply({"op": "update_vectors", "ids": ids, "arrays": arrays})

    def delete_vectors(self, body: dict[str, Any]) -> int:
        names = body.get("vector") if isinstance(body, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadRequest("`vector` must be a list of vector names")
        for n in names:
            self.config.vector(n)
        with self.write_lock:
            ids = self._select_ids(body, require_existing=True)
            return self._log_and_apply({"op": "delete_vectors", "ids": ids, "names": names})

    # ---- config & indexes --------------------------------------------------------------------

    def update_config(self, body: dict[str, Any]) -> None:
        with self.write_lock:
            self.config = apply_update(self.config, body)
            self._write_config()

    def create_index(self, field: str, schema: Any) -> None:
        if not isinstance(field, str) or not field:
            raise BadRequest("`field_name` must be a non-empty string")
        payload_ops.parse_path(field)
        type_name = schema.get("type") if isinstance(schema, dict) else schema
        if type_name not in INDEX_TYPES:
            raise BadRequest(f"unknown field_schema {schema!r}")
        with self.write_lock:
            self.payload_schema[field] = {"type": type_name,
                                          "params": schema if isinstance(schema, dict) else None}
            self._write_config()
            for seg in self.segments:
                seg.column(field)

    def delete_index(self, field: str) -> None:
        with self.write_lock:
            if self.payload_schema.pop(field, None) is not None:
                self._write_config()

    def index_type(self, field: str) -> str | None:
        entry = self.payload_schema.get(field)
        return entry["type"] if entry else None

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
                base = new.seg_id << ROW_BITS
                self.id_map.update(zip(new.ids, range(base, base + new.n), strict=True))
                self._warm_indexes(new)
                done += 1
        return done

    # ---- flush -------------------------------------------------------------------------------

    def needs_flush(self, wal_limit: int, idle_s: float) -> bool:
        if self.wal.last_seq <= self.flushed_seq:
            return False
        return (self.wal.bytes_since_rotate >= wal_limit
                or time.monotonic() - self.last_write >= idle_s)

    def flush(self) -> None:
        """Persist segments as of one WAL seq, then drop the WAL files it covers."""
        with self.flush_lock:
            with self.write_lock:
                if self._closed:
                    return
                seq = self.wal.rotate()
                frozen = []
                for seg in self.segments:
                    if seg.dirty or seg.seg_id not in self.seg_meta:
                        frozen.append((seg, seg.freeze(), seg.flushed_n, seg.payloads_dirty))
                        seg.dirty = seg.payloads_dirty = False
                order = [s.seg_id for s in self.segments]
            gen = self.gen + 1
            metas = dict(self.seg_meta)
            try:
                for seg, fz, flushed_n, pay_dirty in frozen:
                    old = self.seg_meta.get(seg.seg_id)
                    # payload_gen None: the payloads are still the recovered archive's
                    fresh = pay_dirty or (old is None and seg.blob is None)
                    pgen = gen if fresh else (old["payload_gen"] if old else None)
                    write_segment(os.path.join(self.path, "segments", str(seg.seg_id)), fz,
                                  flushed_n, gen, pgen if fresh else None)
                    metas[seg.seg_id] = {"id": seg.seg_id, "n": fz.n, "gen": gen,
                                         "payload_gen": pgen, "sealed": fz.sealed}
                    if seg.blob is not None:
                        metas[seg.seg_id]["blob"] = seg.blob
                fsync_dir(os.path.join(self.path, "segments"))
                prev_seq, prev_gen = self.flushed_seq, self.gen
                self.flushed_seq, self.gen = seq, gen
                try:
                    self._write_state([metas[s] for s in order if s in metas])
                except Exception:
                    self.flushed_seq, self.gen = prev_seq, prev_gen
                    raise
            except Exception:
                for seg, *_ in frozen:
                    seg.dirty = seg.payloads_dirty = True
                raise
            for seg, fz, _, _ in frozen:
                seg.flushed_n = fz.n
            self.seg_meta = {s: metas[s] for s in order if s in metas}
            self.wal.drop_before(seq)
            self._remove_stray_segments()

    def close(self, flush: bool = True) -> None:
        if flush and not self._closed:
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the WAL still holds everything
                log.exception("flush on close failed for %s", self.name)
        with self.write_lock:
            self._closed = True
            self.wal.close()

    # ---- ANN indexes (built by the catalog's background indexer) ------------------------------

    def pending_index(self) -> tuple[Segment, str, int] | None:
        """The next (segment, vector name, rows) whose unindexed rows passed
        `indexing_threshold`; device-resident segments are searched exactly on the GPU."""
        m, _ = self._hnsw()
        if not ann.available() or m <= 0 or self._closed:
            return None
        for seg in list(self.segments):
            if seg.on_device:
                continue
            n = seg.n
            for name, spec in self.config.vectors.items():
                row_bytes = seg.vectors[name].dtype.itemsize * spec.size
                need = ann.threshold_rows(self.config.optimizer_config.get("indexing_threshold"),
                                          row_bytes)
                have = seg.ann.get(name)
                if need is not None and n - (have.rows if have else 0) >= need:
                    return seg, name, n
        return None

    def build_pending_index(self) -> bool:
        """Build (or extend) one index outside every lock (rows below `n` never change),
        then swap it in. Returns False when nothing was pending."""
        task = self.pending_index()
        if task is None:
            return False
        seg, name, n = task
        spec = self.config.vectors[name]
        vectors = to_host(seg.vectors[name][:n]).astype(np.float32, copy=False)
        index = ann.HnswIndex.build(vectors, spec.distance.metric, *self._hnsw(),
                                    base=seg.ann.get(name))
        with self.write_lock:
            if self.seg_by_id.get(seg.seg_id) is not seg or self._closed:
                return True  # vacuumed or dropped meanwhile: the new segment gets its own
            seg.adopt_index(name, index)
        write_graph(os.path.join(self.path, "segments", str(seg.seg_id)), name, index.graph(),
                    seg.id_recs[: index.rows])
        log.info("collection %s: HNSW index over %d rows of segment %d (%r)", self.name,
                 index.rows, seg.seg_id, name)
        return True

    def digest_sealed(self) -> bool:
        """Hash one sealed segment's vectors member ahead of any snapshot (they never change
        again), so snapshot creation only hashes what is still growing. False: none left."""
        for seg in list(self.segments):
            if not seg.sealed or self._closed:
                continue
            for name in self.config.vectors:
                n = seg.n
                if seg.digests.get(name, (-1, ""))[0] != n:
                    seg.digests = {**seg.digests,
                                   name: (n, npy_sha256(to_host(seg.vectors[name][:n])))}
                    return True
        return False

    def indexed_vectors(self) -> int:
        return sum(index.rows for seg in self.segments for index in seg.ann.values())

    # ---- device placement --------------------------------------------------------------------

    def fall_back_to_cpu(self, reason: str) -> None:
        """A device failure hit this collection: move every segment to host memory and serve
        from the CPU from now on (logged once per collection)."""
        with self.write_lock:
            if self.xp is np and not any(s.on_device for s in self.segments):
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
            self.xp = np
            self.device_fallback = reason
        if "OutOfMemory" not in reason:
            xpmod.disable_device(reason)

    def device_info(self) -> dict[str, Any]:
        on_dev = sum(1 for s in self.segments if s.on_device)
        return {"device": xpmod.backend_name() if on_dev else "cpu",
                "segments_on_device": on_dev, "segments_on_host": len(self.segments) - on_dev,
                **({"fallback_reason": self.device_fallback} if self.device_fallback else {})}

    # ---- info --------------------------------------------------------------------------------

    def points_count(self) -> int:
        return sum(seg.live_count() for seg in self.segments)

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
            "status": "yellow" if self.pending_index() else "green",  # yellow: indexing
            "optimizer_status": "ok",
            "indexed_vectors_count": self.indexed_vectors(),
            "points_count": self.points_count(),
            "segments_count": len(self.segments),
            "config": self.config.to_json(),
            "payload_schema": schema,
        }
