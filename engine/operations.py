"""Typed write operations, and their one WAL encoding.

The API parses a request body into one of these; `Collection.write(op)` resolves a filter
selection to explicit ids under the write lock, logs the op and applies it. Replay decodes
the same records, so a live write and its replay run the very same code.

The WAL record layout is the one earlier versions wrote (a dict with "op", "ids" and, for
vectors, arrays under "v:<name>" with row positions under "p:<name>"), so existing WALs replay.
Sparse vectors add "s:<name>" (row ends, int64), "si:<name>" (indices, uint32), "sv:<name>"
(values, float32) and "sp:<name>" (positions): keys an older record never has.
Multivectors add "m:<name>" (row ends, int64), "mt:<name>" (tokens, (t, dim) float32) and
"mp:<name>" (positions), likewise new keys: records without multivectors are unchanged.

Conditional writes (`update_filter`, `update_mode`) never reach the WAL: the collection
resolves them under its write lock into the plain op over the points it really writes
(`resolved`), so a record replays to exactly what was acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from engine.filters import Predicate
from engine.ids import PointId
from engine.multivector import MultiBatch
from engine.sparse import SparseBatch


@dataclass(frozen=True)
class VectorRows:
    """One named vector for some of an operation's points: `positions` index the op's `ids`."""

    positions: np.ndarray  # (r,) int64
    values: np.ndarray  # (r, dim) float32, already prepared (Cosine: unit length)


@dataclass(frozen=True)
class SparseRows:
    """One sparse vector for some of an operation's points: batch row j belongs to the op's
    point `positions[j]`."""

    positions: np.ndarray  # (r,) int64
    rows: SparseBatch  # r rows, each sorted by index, checked


@dataclass(frozen=True)
class MultiRows:
    """One multivector for some of an operation's points: batch row j belongs to the op's
    point `positions[j]`; tokens already prepared (Cosine: unit length)."""

    positions: np.ndarray  # (r,) int64
    rows: MultiBatch


@dataclass
class Operation:
    """Base: the points it touches. `filter`, when set, selects them instead of `ids`; the
    collection resolves it to ids before logging, which keeps replay deterministic."""

    ids: list[PointId]
    filter: Predicate | None = field(default=None, kw_only=True)

    kind: ClassVar[str] = ""
    # explicit ids naming a missing point are a 404 (Qdrant), except for deletes and upserts
    requires_existing: ClassVar[bool] = True


UPDATE_MODES = ("upsert", "insert_only", "update_only")  # Qdrant's UpdateMode


@dataclass
class Upsert(Operation):
    vectors: dict[str, VectorRows] = field(default_factory=dict)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    sparse: dict[str, SparseRows] = field(default_factory=dict)
    multi: dict[str, MultiRows] = field(default_factory=dict)
    # existing points are replaced only where they match; new points are inserted regardless
    update_filter: Predicate | None = field(default=None, kw_only=True)
    update_mode: str = field(default="upsert", kw_only=True)  # one of UPDATE_MODES

    kind: ClassVar[str] = "upsert"
    requires_existing: ClassVar[bool] = False

    @property
    def conditional(self) -> bool:
        return self.update_filter is not None or self.update_mode != "upsert"


@dataclass
class DeletePoints(Operation):
    kind: ClassVar[str] = "delete"
    requires_existing: ClassVar[bool] = False


@dataclass
class SetPayload(Operation):
    payload: dict[str, Any] = field(default_factory=dict)
    key: str | None = None

    kind: ClassVar[str] = "set_payload"


@dataclass
class OverwritePayload(Operation):
    payload: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "overwrite_payload"


@dataclass
class DeletePayload(Operation):
    keys: list[str] = field(default_factory=list)

    kind: ClassVar[str] = "delete_payload"


@dataclass
class ClearPayload(Operation):
    kind: ClassVar[str] = "clear_payload"


@dataclass
class UpdateVectors(Operation):
    vectors: dict[str, VectorRows] = field(default_factory=dict)
    sparse: dict[str, SparseRows] = field(default_factory=dict)
    multi: dict[str, MultiRows] = field(default_factory=dict)
    update_filter: Predicate | None = field(default=None, kw_only=True)  # only matching points

    kind: ClassVar[str] = "update_vectors"

    @property
    def conditional(self) -> bool:
        return self.update_filter is not None


@dataclass
class DeleteVectors(Operation):
    names: list[str] = field(default_factory=list)

    kind: ClassVar[str] = "delete_vectors"


PAYLOAD_OPS: tuple[type[Operation], ...] = (SetPayload, OverwritePayload, DeletePayload,
                                             ClearPayload)
ALL_OPS: tuple[type[Operation], ...] = (Upsert, DeletePoints, *PAYLOAD_OPS, UpdateVectors,
                                        DeleteVectors)
BY_KIND: dict[str, type[Operation]] = {cls.kind: cls for cls in ALL_OPS}


def resolved(op: Upsert | UpdateVectors, keep: np.ndarray) -> Upsert | UpdateVectors:
    """The plain (unconditional) op over the points where `keep` (bool, one per id) holds:
    vectors, sparse and multivector rows re-indexed onto the kept points."""
    new_pos = np.cumsum(keep) - 1

    def rows_of(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sel = np.flatnonzero(keep[positions])
        return sel, new_pos[positions[sel]].astype(np.int64)

    vectors = {}
    for name, v in op.vectors.items():
        sel, pos = rows_of(v.positions)
        vectors[name] = VectorRows(pos, v.values[sel])
    sparse = {}
    for name, s in op.sparse.items():
        sel, pos = rows_of(s.positions)
        sparse[name] = SparseRows(pos, s.rows.take(sel))
    multi = {}
    for name, m in op.multi.items():
        sel, pos = rows_of(m.positions)
        multi[name] = MultiRows(pos, m.rows.take(sel))
    idx = np.flatnonzero(keep).tolist()
    ids = [op.ids[i] for i in idx]
    if isinstance(op, Upsert):
        return Upsert(ids, vectors, [op.payloads[i] for i in idx], sparse, multi)
    return UpdateVectors(ids, vectors, sparse, multi)


# ---- WAL encoding -----------------------------------------------------------------------------


def _encode_vectors(vectors: dict[str, VectorRows], n: int, with_positions: bool
                    ) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, rows in vectors.items():
        arrays["v:" + name] = rows.values
        # an upsert whose vector covers every point in order needs no positions
        if with_positions or len(rows.positions) != n or not np.array_equal(
                rows.positions, np.arange(n)):
            arrays["p:" + name] = rows.positions
    return arrays


def _decode_vectors(arrays: dict[str, np.ndarray], n: int) -> dict[str, VectorRows]:
    out = {}
    for key, values in arrays.items():
        if key.startswith("v:"):
            name = key[2:]
            pos = arrays.get("p:" + name)
            out[name] = VectorRows(np.arange(n, dtype=np.int64) if pos is None else pos, values)
    return out


def _encode_sparse(sparse: dict[str, SparseRows]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, rows in sparse.items():
        arrays["s:" + name] = rows.rows.indptr[1:]
        arrays["si:" + name] = rows.rows.indices
        arrays["sv:" + name] = rows.rows.values
        arrays["sp:" + name] = rows.positions
    return arrays


def _decode_sparse(arrays: dict[str, np.ndarray]) -> dict[str, SparseRows]:
    out = {}
    for key, ends in arrays.items():
        if key.startswith("s:"):
            name = key[2:]
            indptr = np.zeros(len(ends) + 1, np.int64)
            indptr[1:] = ends
            out[name] = SparseRows(arrays["sp:" + name],
                                   SparseBatch(indptr, arrays["si:" + name], arrays["sv:" + name]))
    return out


def _encode_multi(multi: dict[str, MultiRows]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, rows in multi.items():
        arrays["m:" + name] = rows.rows.offsets[1:]
        arrays["mt:" + name] = rows.rows.tokens
        arrays["mp:" + name] = rows.positions
    return arrays


def _decode_multi(arrays: dict[str, np.ndarray]) -> dict[str, MultiRows]:
    out = {}
    for key, ends in arrays.items():
        if key.startswith("m:"):
            name = key[2:]
            offsets = np.zeros(len(ends) + 1, np.int64)
            offsets[1:] = ends
            out[name] = MultiRows(arrays["mp:" + name], MultiBatch(offsets, arrays["mt:" + name]))
    return out


def to_record(op: Operation) -> dict[str, Any]:
    """op → the WAL's record dict (arrays under "arrays"). The op's ids must be resolved."""
    if op.filter is not None:
        raise ValueError("a filter selection must be resolved to ids before logging")
    if isinstance(op, Upsert | UpdateVectors) and op.conditional:
        raise ValueError("a conditional write must be resolved before logging")
    rec: dict[str, Any] = {"op": op.kind, "ids": op.ids}
    if isinstance(op, Upsert):
        rec["payloads"] = op.payloads
        rec["arrays"] = _encode_vectors(op.vectors, len(op.ids), with_positions=False)
        rec["arrays"].update(_encode_sparse(op.sparse))
        rec["arrays"].update(_encode_multi(op.multi))
    elif isinstance(op, UpdateVectors):
        rec["arrays"] = _encode_vectors(op.vectors, len(op.ids), with_positions=True)
        rec["arrays"].update(_encode_sparse(op.sparse))
        rec["arrays"].update(_encode_multi(op.multi))
    elif isinstance(op, SetPayload):
        rec["payload"] = op.payload
        if op.key is not None:
            rec["key"] = op.key
    elif isinstance(op, OverwritePayload):
        rec["payload"] = op.payload
    elif isinstance(op, DeletePayload):
        rec["keys"] = op.keys
    elif isinstance(op, DeleteVectors):
        rec["names"] = op.names
    return rec


def from_record(rec: dict[str, Any]) -> Operation:
    """The WAL's record dict → op (unknown kinds raise ValueError: a newer WAL)."""
    kind = rec.get("op")
    ids = list(rec.get("ids") or [])
    if kind == "upsert":
        arrays = rec.get("arrays") or {}
        return Upsert(ids, _decode_vectors(arrays, len(ids)), list(rec.get("payloads") or []),
                      _decode_sparse(arrays), _decode_multi(arrays))
    if kind == "delete":
        return DeletePoints(ids)
    if kind == "set_payload":
        return SetPayload(ids, rec["payload"], rec.get("key"))
    if kind == "overwrite_payload":
        return OverwritePayload(ids, rec["payload"])
    if kind == "delete_payload":
        return DeletePayload(ids, list(rec["keys"]))
    if kind == "clear_payload":
        return ClearPayload(ids)
    if kind == "update_vectors":
        arrays = rec.get("arrays") or {}
        return UpdateVectors(ids, _decode_vectors(arrays, len(ids)), _decode_sparse(arrays),
                             _decode_multi(arrays))
    if kind == "delete_vectors":
        return DeleteVectors(ids, list(rec["names"]))
    raise ValueError(f"unknown WAL op {kind}")
