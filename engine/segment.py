"""A segment: ids + vectors (one gpu.matrix.DeviceMatrix per vector) + payloads + deleted mask.

Rows are append-only: once written, a row's id and vectors never change (an upsert of an
existing id deletes the old row and appends a new one). Only the deleted mask, the
vector-present masks, versions and the payload list entries change in place, and payload
dicts themselves are replaced, never mutated. That is what lets a flush or a snapshot freeze
a segment by recording its row count and copying a few small host arrays.

Where the vectors live (device or host memory), the device memory budget and falling back
to host memory after a device failure are the matrices' business (gpu/), not this module's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.columns import Column, ColumnData
from engine.config import VectorSpec
from engine.ids import ID_DTYPE, PointId
from engine.multivector import MultiBatch, MultiStore, empty_batch
from engine.payload import raw_values_at
from engine.sparse import SparseBatch, SparseStore
from gpu.budget import now
from gpu.device import HOST, Device, DeviceFailure, placement
from gpu.matrix import DeviceMatrix

CHANGE_LOG_LIMIT = 256
FILTER_CACHE = 8  # masks of n bools each: bounded memory per segment
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


@dataclass
class FrozenSegment:
    """A consistent, immutable view of a segment's first `n` rows (for flush and snapshots)."""

    seg_id: int
    n: int
    sealed: bool
    id_recs: np.ndarray
    matrices: dict[str, DeviceMatrix]  # name → its rows (rows below n are immutable: no copy)
    present: dict[str, np.ndarray]
    deleted: np.ndarray
    versions: np.ndarray
    payloads: list[dict[str, Any]]
    payloads_changed: bool
    ann: dict[str, Any]  # vector name → HnswIndex over its leading rows (immutable)
    digests: dict[str, str]  # vector name → sha256 of its .npy member, where precomputed
    sparse: dict[str, SparseBatch]  # sparse name → rows [0, n) (views: immutable rows)
    multi: dict[str, MultiBatch]  # multivector name → rows [0, n) (views: immutable rows)
    quantized: dict[str, Any] = field(default_factory=dict)  # name → QuantizedRows (codes)

    def host_rows(self, name: str, start: int = 0) -> np.ndarray:
        """Rows [start, n) of a vector in host memory, in their storage dtype."""
        return self.matrices[name].host_rows(self.n, start)


class _Arrays(Mapping[str, Any]):
    """name → a matrix's current storage array (`norms`: its squared norms, L2 vectors only),
    for readers that slice `seg.vectors[name][:n]` themselves."""

    def __init__(self, matrices: dict[str, DeviceMatrix], norms: bool = False) -> None:
        self._m = matrices
        self._norms = norms

    def __getitem__(self, name: str) -> Any:
        m = self._m[name]
        if not self._norms:
            return m.array
        if m.norms is None:
            raise KeyError(name)
        return m.norms

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, m in self._m.items() if not self._norms or m.l2])

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _CodesSlot:
    """What holds a vector's device codes in the budget (one per segment and vector: its
    reservation is resized as the codes grow, and dropped with the segment)."""


class Segment:
    def __init__(self, seg_id: int, specs: dict[str, VectorSpec], device: Any = None,
                 capacity: int = 1024, sparse: tuple[str, ...] = (),
                 multi: dict[str, VectorSpec] | None = None,
                 host_vectors: Iterable[str] = ()) -> None:
        """`device`: a gpu.device.Device (default: the process default device). The numpy
        module (host memory) or cupy (the default device) are accepted too. `sparse`: the
        collection's sparse vector names (their rows live on the host, engine/sparse.py);
        `multi`: its multivectors (token rows on the host, engine/multivector.py).
        `host_vectors`: quantized vectors, whose float rows stay in host memory while their
        codes go to the device (see `place_codes`)."""
        self.seg_id = seg_id
        self.specs = specs
        self.device: Device = placement(device)
        # the device is this segment's home until it moves to host memory (codes follow it)
        self.device_home = self.device.array_module() is not np
        self.host_vectors: set[str] = set(host_vectors) & set(specs)
        self._code_slots: dict[str, _CodesSlot] = {}
        self.last_used = now()
        self.capacity = 0
        self.n = 0
        self.sealed = False
        self.ids: list[PointId] = []
        self.id_recs = np.zeros(0, ID_DTYPE)
        self.matrices: dict[str, DeviceMatrix] = {
            name: DeviceMatrix(HOST if name in self.host_vectors else self.device, spec.size,
                               STORAGE_DTYPES[spec.datatype], l2=spec.distance.metric == "l2",
                               owner=self)
            for name, spec in specs.items()}
        self.vectors: Mapping[str, Any] = _Arrays(self.matrices)  # name → storage array
        self.sq_norms: Mapping[str, Any] = _Arrays(self.matrices, norms=True)
        self.sparse: dict[str, SparseStore] = {name: SparseStore() for name in sparse}
        self.multi_specs: dict[str, VectorSpec] = dict(multi or {})
        self.multi: dict[str, MultiStore] = {name: MultiStore(spec.size)
                                             for name, spec in self.multi_specs.items()}
        self.present: dict[str, np.ndarray] = {}  # dense and sparse names
        self.deleted = np.zeros(0, bool)
        self.versions = np.zeros(0, np.uint64)
        self.payloads: list[dict[str, Any]] = []
        self.ann: dict[str, Any] = {}  # vector name → engine.ann.HnswIndex, swapped whole
        # vector name → engine.quantization.QuantizedRows over its leading rows, swapped whole
        self.quantized: dict[str, Any] = {}
        self.mask_version = 0  # bumped when rows are deleted or lose vectors
        self.filter_cache: dict[Any, tuple[np.ndarray, int]] = {}  # see query.segment_mask_count
        self._live_cache: dict[str | None, tuple[Any, np.ndarray, int]] = {}
        self.digests: dict[str, tuple[int, str]] = {}  # name → (rows, sha256 of .npy member)
        self.blob: dict[str, Any] | None = None  # rows stored in a recovered archive (see
        # engine.segment_store); such a segment is sealed and its row files never written
        self.payload_version = 0
        self._changes: list[tuple[int, np.ndarray]] = []
        self._columns: dict[str, Column] = {}
        self._nested: dict[str, tuple[int, int, Any]] = {}
        self.lock = threading.Lock()  # guards column/nested caches only
        # persistence bookkeeping
        self.flushed_n = 0
        self.dirty = True
        self.payloads_dirty = True
        self._grow(capacity)

    # ---- placement (the matrices decide: device, budget, failures) --------------------------

    @property
    def on_device(self) -> bool:
        """Searched on the device: some rows are there, or its quantized vectors' codes are
        (their float rows live in host memory: only rescoring candidates come from there)."""
        for m in self.matrices.values():  # no generator: this runs on every search
            if m.on_device:
                return True
        return self.device_home and bool(self.host_vectors)

    def keep_on_host(self, name: str) -> None:
        """A quantized vector: its float rows live in host memory from now on (releasing their
        device memory); its codes take their place (`place_codes`). Caller holds the
        collection write lock (no write may land in the device array being replaced)."""
        if name in self.host_vectors or name not in self.matrices:
            return
        self.host_vectors.add(name)
        self.matrices[name].move_to_host()

    def place_codes(self, name: str, rec: Any) -> Any:
        """`rec` (engine.quantization.QuantizedRows) where this segment lives: on its device
        when the budget fits the codes' bytes (reserved under this vector's slot; cold sealed
        segments may be evicted), else in host memory, and then, if nothing else of this
        segment is on the device, the whole segment is a host segment."""
        if not self.device_home:
            return rec.placed(np)
        slot = self._code_slots.setdefault(name, _CodesSlot())
        if self.device.budget.reserve(self, rec.nbytes(), holder=slot):
            try:
                with self.device.guard("placing quantized codes"):
                    return rec.placed(self.device.array_module())
            except DeviceFailure:
                self.device.budget.release(slot)
                self.move_to_host()
                return rec.placed(np)
        self.device.budget.release(slot)
        if not any(m.on_device for m in self.matrices.values()):
            self.move_to_host()
        return rec.placed(np)

    def touch(self) -> None:
        self.last_used = now()

    def remember_filter(self, key: Any, result: tuple[np.ndarray, int]) -> None:
        """Keep the most recent FILTER_CACHE filter masks (each n bools); older ones go."""
        with self.lock:  # readers on several threads insert; eviction iterates
            cache = self.filter_cache
            cache[key] = result
            while len(cache) > FILTER_CACHE:
                cache.pop(next(iter(cache)), None)

    def adopt_index(self, name: str, index: Any) -> None:
        """Attach an HNSW index; a sealed host segment whose float32 rows it covers entirely
        then serves its vectors from the index's storage (same values), so they are held
        once, not twice."""
        self.ann = {**self.ann, name: index}
        m = self.matrices.get(name)
        if (self.sealed and not self.on_device and m is not None and m.dtype == np.float32
                and index.rows == self.n and self.n > 0):
            m.share_host_rows(index.vectors_view())

    # ---- storage growth (capacity doubling; old arrays stay valid for readers) ---------------

    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        cap = max(need, self.capacity * 2, 16)
        for m in self.matrices.values():
            m.grow(cap, self.n)
        for store in self.sparse.values():
            store.grow(cap, self.n)
        for mstore in self.multi.values():
            mstore.grow(cap, self.n)
        for name in [*self.specs, *self.sparse, *self.multi]:
            pres = np.zeros(cap, bool)
            if name in self.present:
                pres[: self.n] = self.present[name][: self.n]
            self.present[name] = pres
        self.id_recs = _grown(self.id_recs, cap, self.n)
        self.deleted = _grown(self.deleted, cap, self.n)
        self.versions = _grown(self.versions, cap, self.n)
        self.capacity = cap

    def move_to_host(self) -> None:
        """Copy device-resident vectors (and codes) to host memory and search this segment on
        the CPU. Readers holding the old device arrays keep using them until they finish."""
        self.device_home = False
        for m in self.matrices.values():
            m.move_to_host()
        if any(rec.on_device for rec in self.quantized.values()):
            self.quantized = {name: rec.placed(np) for name, rec in self.quantized.items()}
        self.device.budget.release(self)

    def memory_bytes(self) -> tuple[int, int]:
        """(device, host) bytes of this segment's dense rows, norms and quantized codes."""
        dev = host = 0
        for m in self.matrices.values():
            if m.on_device:
                dev += m.nbytes()
            else:
                host += m.nbytes()
        for rec in self.quantized.values():
            if rec.on_device:
                dev += rec.nbytes()
            else:
                host += rec.nbytes()
        return dev, host

    # ---- writes (caller holds the collection write lock) --------------------------------------

    def append(self, ids: list[PointId], id_recs: np.ndarray,
               vectors: dict[str, tuple[np.ndarray, np.ndarray]],
               payloads: list[dict[str, Any]], version: int,
               sparse: dict[str, tuple[np.ndarray, SparseBatch]] | None = None,
               multi: dict[str, tuple[np.ndarray, MultiBatch]] | None = None) -> np.ndarray:
        """Append rows. `vectors[name] = (batch positions that have it, (r, dim) array)`;
        `sparse[name]` the same for a sparse vector (its rows as one CSR batch), `multi[name]`
        for a multivector (its token rows as one batch)."""
        m = len(ids)
        start = self.n
        self._grow(start + m)
        rows = np.arange(start, start + m, dtype=np.int64)
        for name, (pos, arr) in vectors.items():
            matrix = self.matrices[name]
            if len(pos) == 0:
                continue
            if len(pos) > 1 and (np.diff(pos) < 0).any():  # positions may come in any order
                order = np.argsort(pos, kind="stable")
                pos, arr = pos[order], arr[order]
            dest = rows[pos]
            matrix.write(dest, to_storage(arr, matrix.dtype))
            self.present[name][dest] = True
        for name, store in self.sparse.items():  # every row gets its (maybe empty) CSR row
            pos, batch = (sparse or {}).get(name) or (np.empty(0, np.int64), SparseBatch.of([]))
            if len(pos) > 1 and (np.diff(pos) < 0).any():
                order = np.argsort(pos, kind="stable")
                pos, batch = pos[order], batch.take(order)
            store.append(start, m, pos, batch)
            self.present[name][rows[pos]] = True
        for name, mstore in self.multi.items():  # likewise: every row gets its token range
            mpos, mbatch = (multi or {}).get(name) or (np.empty(0, np.int64),
                                                       empty_batch(mstore.dim))
            if len(mpos) > 1 and (np.diff(mpos) < 0).any():
                order = np.argsort(mpos, kind="stable")
                mpos, mbatch = mpos[order], mbatch.take(order)
            mstore.append(start, m, mpos, mbatch)
            self.present[name][rows[mpos]] = True
        self.id_recs[start : start + m] = id_recs
        self.versions[start : start + m] = version
        self.ids.extend(ids)
        self.payloads.extend(payloads)
        self.n = start + m  # publish last: readers never see rows before their data
        self.dirty = self.payloads_dirty = True
        return rows

    def delete_rows(self, rows: np.ndarray) -> None:
        self.deleted[rows] = True
        self.mask_version += 1
        self.dirty = True

    def set_payloads(self, rows: np.ndarray, payloads: list[dict[str, Any]], version: int) -> None:
        for r, p in zip(rows.tolist(), payloads, strict=True):
            self.payloads[r] = p
        self.versions[rows] = version
        self.payload_version += 1
        self._changes.append((self.payload_version, rows.copy()))
        if len(self._changes) > CHANGE_LOG_LIMIT:
            del self._changes[: len(self._changes) - CHANGE_LOG_LIMIT]
        self.dirty = self.payloads_dirty = True

    def drop_vectors(self, rows: np.ndarray, names: list[str], version: int) -> None:
        for name in names:
            self.present[name][rows] = False
        self.mask_version += 1
        self.versions[rows] = version
        self.dirty = True

    # ---- reads -------------------------------------------------------------------------------

    def live_mask(self, n: int, vector: str | None = None) -> tuple[np.ndarray, int]:
        """(read-only mask of rows that are live and have `vector`, how many): cached until
        rows are deleted or lose vectors, so unfiltered searches allocate nothing per query."""
        key = (vector, n, self.mask_version)
        hit = self._live_cache.get(vector)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        mask = ~self.deleted[:n]
        if vector is not None:
            mask &= self.present[vector][:n]
        mask.setflags(write=False)
        allowed = int(np.count_nonzero(mask))
        self._live_cache[vector] = (key, mask, allowed)
        return mask, allowed

    def sparse_of(self, name: str, rows: np.ndarray) -> SparseBatch:
        """Some rows of a sparse vector (host copies), in the order given."""
        return self.sparse[name].rows(rows)

    def multi_of(self, name: str, rows: np.ndarray) -> MultiBatch:
        """Some rows of a multivector (host copies), in the order given."""
        return self.multi[name].rows(rows)

    def vectors_of(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Host float32 copies of some rows' vectors (for responses)."""
        return self.matrices[name].gather(rows)

    def host_rows(self, name: str, n: int, start: int = 0) -> np.ndarray:
        """Rows [start, n) of a vector in host memory, in their storage dtype (a view when
        the segment is on the host; a copy from the device otherwise)."""
        return self.matrices[name].host_rows(n, start)

    def row_bytes(self, name: str) -> int:
        """Stored bytes per row of one vector."""
        return self.matrices[name].row_bytes

    def search(self, name: str, start: int, n: int, queries: np.ndarray, k: int, metric: str,
               mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of one vector over rows [start, n), wherever the rows live: (scores,
        rows counted from `start`), host arrays (see gpu.flat.search). A device failure
        raises gpu.device.DeviceFailure: the caller moves the collection to the CPU."""
        return self.matrices[name].search(start, n, queries, k, metric, mask)

    def payload_changes_since(self, version: int) -> np.ndarray | None:
        if version == self.payload_version:
            return np.empty(0, np.int64)
        if not self._changes or self._changes[0][0] > version + 1:
            return None
        parts = [rows for v, rows in self._changes if v > version]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def payload_rows(self) -> int:
        return self.n

    def payload_at(self, row: int) -> dict[str, Any]:
        return self.payloads[row]

    def column(self, path: str) -> ColumnData:
        col = self._columns.get(path)
        if col is None:
            with self.lock:
                col = self._columns.setdefault(path, Column(path))
        return col.sync(self)

    def nested_elements(self, path: str, n: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        key = f"{path}"
        cached = self._nested.get(key)
        if cached and cached[0] == self.payload_version and cached[1] == n:
            return cached[2]
        elems: list[dict[str, Any]] = []
        parents: list[int] = []
        for row in range(n):  # nested views are built once per payload version, then cached
            for v in raw_values_at(self.payloads[row], path):
                if not isinstance(v, list):
                    continue  # `nested` applies to arrays of objects only
                for e in v:
                    if isinstance(e, dict):
                        elems.append(e)
                        parents.append(row)
        result = (elems, np.array(parents, dtype=np.int64))
        self._nested[key] = (self.payload_version, n, result)
        return result

    def freeze(self) -> FrozenSegment:
        """Caller holds the collection write lock: O(small arrays + one list copy)."""
        n = self.n
        return FrozenSegment(
            seg_id=self.seg_id, n=n, sealed=self.sealed,
            id_recs=self.id_recs[:n].copy(),
            matrices=dict(self.matrices),
            present={name: p[:n].copy() for name, p in self.present.items()},
            deleted=self.deleted[:n].copy(),
            versions=self.versions[:n].copy(),
            payloads=self.payloads[:n],
            payloads_changed=self.payloads_dirty,
            ann=dict(self.ann),
            digests={name: d for name, (rows, d) in self.digests.items() if rows == n},
            sparse={name: store.csr(n) for name, store in self.sparse.items()},
            multi={name: store.batch(n) for name, store in self.multi.items()},
            quantized=dict(self.quantized),
        )

    @classmethod
    def from_arrays(cls, seg_id: int, specs: dict[str, VectorSpec], device: Any,
                    data: dict[str, Any], sealed: bool, host_vectors: Iterable[str] = ()
                    ) -> Segment:
        """A segment from host arrays (from disk or a snapshot). A sealed segment on the host
        keeps memory-mapped vectors as they are (its rows never change: the page cache serves
        them, nothing is copied); otherwise one large copy per array, to the device if any."""
        n = len(data["id_recs"])
        sparse: dict[str, SparseBatch] = data.get("sparse") or {}
        multi: dict[str, tuple[VectorSpec, MultiBatch]] = data.get("multi") or {}
        quantized = dict(data.get("quantized") or {})  # a snapshot's codes: floats stay host
        seg = cls(seg_id, specs, device, capacity=max(n, 16), sparse=tuple(sparse),
                  multi={name: spec for name, (spec, _) in multi.items()},
                  host_vectors={*host_vectors, *quantized})
        seg.sealed = sealed
        for name, (spec, mbatch) in multi.items():
            seg.multi[name] = MultiStore.load(mbatch, spec.size, seg.capacity)
            seg.present[name][:n] = data["present"][name]
        for name, batch in sparse.items():
            seg.sparse[name] = SparseStore.load(batch, seg.capacity)
            seg.present[name][:n] = data["present"][name]
        for name, arr in data["vectors"].items():
            seg.matrices[name].load(arr, n, keep_mapped=sealed)
            seg.present[name][:n] = data["present"][name]
        seg.id_recs[:n] = data["id_recs"]
        seg.deleted[:n] = data["deleted"]
        seg.versions[:n] = data["versions"]
        seg.payloads = list(data["payloads"])
        from engine.ids import records_to_ids  # noqa: PLC0415 - avoid a cycle at import
        seg.ids = records_to_ids(data["id_recs"])
        seg.n = n
        seg.sealed = sealed
        seg.blob = data.get("blob")
        seg.digests = {name: (n, d) for name, d in (data.get("digests") or {}).items()}
        for name, index in (data.get("ann") or {}).items():
            seg.adopt_index(name, index)
        seg.quantized = {name: seg.place_codes(name, rec) for name, rec in quantized.items()}
        return seg

    @classmethod
    def compacted(cls, src: Segment, seg_id: int) -> Segment:
        """A copy of `src` without its deleted rows (vacuum). Caller holds the write lock."""
        n = src.n
        live = np.flatnonzero(~src.deleted[:n])
        m = len(live)
        seg = cls(seg_id, src.specs, src.device if src.on_device else HOST,
                  capacity=max(m, 16), sparse=tuple(src.sparse), multi=src.multi_specs,
                  host_vectors=src.host_vectors)
        for name, mstore in src.multi.items():
            seg.multi[name] = MultiStore.load(mstore.rows(live), mstore.dim, seg.capacity)
            seg.present[name][:m] = src.present[name][:n][live]
        for name, store in src.sparse.items():
            seg.sparse[name] = SparseStore.load(store.rows(live), seg.capacity)
            seg.present[name][:m] = src.present[name][:n][live]
        for name in src.specs:
            seg.matrices[name].take(src.matrices[name], live, n)
            seg.present[name][:m] = src.present[name][:n][live]
        seg.id_recs[:m] = src.id_recs[:n][live]
        seg.versions[:m] = src.versions[:n][live]
        ids, payloads = src.ids, src.payloads
        seg.ids = [ids[r] for r in live.tolist()]
        seg.payloads = [payloads[r] for r in live.tolist()]
        seg.n = m
        seg.sealed = src.sealed
        return seg

    def deleted_fraction(self) -> float:
        n = self.n
        return float(np.count_nonzero(self.deleted[:n]) / n) if n else 0.0

    def live_count(self) -> int:
        return int(self.n - np.count_nonzero(self.deleted[: self.n]))


def to_storage(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """Vectors in the storage dtype. uint8 saturates and truncates toward zero (how a float
    becomes a byte in Qdrant's Rust core), never wraps: 300 → 255, -1 → 0, 7.9 → 7."""
    if np.dtype(dtype) == np.uint8 and arr.dtype != np.uint8:
        return np.trunc(np.clip(arr, 0, 255)).astype(np.uint8)
    return arr.astype(dtype, copy=False)


def _grown(a: np.ndarray, cap: int, n: int) -> np.ndarray:
    out = np.zeros(cap, a.dtype)
    out[:n] = a[:n]
    return out
