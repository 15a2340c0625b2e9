"""Vectors given as JSON → float32 arrays (dense), CSR batches (sparse `{indices, values}`,
engine/sparse.py) or token batches (multivectors: lists of vectors, engine/multivector.py),
checked the way Qdrant reports them.

Write vectors are converted once per batch and per vector name (`np.asarray` over the list
of lists); the only per-point Python work is picking the right list out of each point.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

from engine.config import CollectionConfig
from engine.errors import BadInput, BadRequest, ValidationError
from engine.multivector import MultiVector
from engine.multivector import checked_batch as checked_multi
from engine.multivector import prepare as prepare_multi
from engine.operations import MultiRows, SparseRows, VectorRows
from engine.sparse import SparseVector, checked_batch, sparse_vector


def numeric_array(raw: Any) -> np.ndarray | None:
    """`raw` (lists of JSON numbers) as float32, or None when it is not one: ragged, or
    holding strings or booleans (`np.asarray(..., dtype=float32)` alone would read "1" as 1.0
    and true as 1.0, which Qdrant refuses). Costs no more than the direct conversion."""
    if type(raw) is list and raw and type(raw[0]) is float:
        # one vector, the common query: array('f') converts each number with the C cast
        # numpy's astype makes (the same float32, overflow to inf included) in one tight
        # loop; numpy's dtype discovery over the list cost ~3x as much, more with cold
        # caches (py-spy on the server: 6 % of a small query). What array() refuses (None,
        # strings, lists, ints beyond a double) takes numpy's path below, unchanged.
        try:
            return np.frombuffer(array("f", raw), dtype=np.float32)
        except (TypeError, OverflowError):
            pass
    try:
        arr = np.asarray(raw)
        if arr.dtype.kind == "O":  # integers beyond 64 bits (or ragged: that fails here)
            return np.asarray(raw, dtype=np.float32)
        if arr.dtype.kind not in "iuf":
            return None
        return arr.astype(np.float32, copy=False)
    except (ValueError, TypeError, OverflowError):
        return None


def query_vector(raw: Any) -> np.ndarray:
    """A dense query vector (not yet checked against the collection: the engine does that)."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest("query vector must be a non-empty list of numbers")
    arr = numeric_array(raw)
    if arr is None:
        if all(isinstance(v, list) for v in raw):
            raise BadRequest("multi-vector queries are not supported by Quiver")
        raise BadInput("Query vector must not contain NaN (null) or non-numeric values")
    if arr.ndim != 1:
        raise BadRequest("multi-vector queries are not supported by Quiver")
    return arr


def is_sparse(raw: Any) -> bool:
    return isinstance(raw, dict) and "indices" in raw and "values" in raw


def sparse_query(raw: Any, name: str = "") -> SparseVector:
    """`{"indices": [...], "values": [...]}` as a query vector (checked, sorted by index)."""
    if not is_sparse(raw) or set(raw) - {"indices", "values"}:
        raise BadRequest("a sparse vector is an object with exactly `indices` and `values`")
    return sparse_vector(raw["indices"], raw["values"], name)


def multi_query(raw: Any, cfg: CollectionConfig, using: str | None) -> MultiVector:
    """A list of vectors as a multivector query for the multivector `using` (checked:
    non-empty, each of the vector's size, finite)."""
    spec = cfg.multivectors[using or ""]
    try:
        batch = checked_multi([raw], spec.size, using or "")
    except ValidationError as exc:
        raise BadInput(str(exc)) from None
    return MultiVector(batch.tokens)


def parse_query_vector(raw: Any, using: str | None, cfg: CollectionConfig
                       ) -> np.ndarray | SparseVector | MultiVector:
    """A `nearest` query vector for the vector `using`: a SparseVector for a sparse name
    (from `{indices, values}`), a MultiVector for a multivector name (a list of vectors, or
    one vector: a single-token query, as Qdrant), a dense float32 array otherwise. A sparse
    vector for a dense name, a multivector for a plain dense one, or the other way around,
    is a 400."""
    if cfg.is_multi(using) and not is_sparse(raw):
        if isinstance(raw, list) and raw and not isinstance(raw[0], list):
            raw = [raw]  # Qdrant accepts a plain vector for a multivector: one token
        return multi_query(raw, cfg, using)
    if cfg.is_sparse(using):
        if not is_sparse(raw):
            raise BadInput(f"Vector '{using}' is sparse: the query must be "
                           "{\"indices\": [...], \"values\": [...]}")
        return sparse_query(raw, using or "")
    if is_sparse(raw):
        if not using:
            raise BadInput("a sparse query vector needs `using`: the name of a sparse vector")
        cfg.search_name(using)  # 400 for an unknown name
        raise BadInput(f"Vector '{using}' is dense: a sparse query vector does not apply")
    if isinstance(raw, list) and raw and isinstance(raw[0], list) \
            and all(isinstance(t, list) for t in raw):  # the first test spares a generator
        cfg.vector(using)  # 400 for an unknown name
        raise BadInput(f"Vector '{using or ''}' is not a multivector: a multivector query (a list "
                       "of vectors) does not apply")
    return query_vector(raw)


def to_matrix(rows: Any, dim: int, name: str) -> np.ndarray:
    """Rows of one named vector → (r, dim) float32, finite."""
    arr = numeric_array(rows)
    if arr is None or arr.ndim != 2 or arr.shape[1] != dim:
        for r in rows:  # error path only: find the offending vector to report it
            if not isinstance(r, list):
                raise BadRequest(f"vector for '{name}' must be a list of numbers")
            if len(r) != dim:
                if len(r) == 0:
                    raise BadInput(f"Dense vector must not be empty for vector '{name}'")
                raise BadInput(f"Vector dimension error: expected dim: {dim}, got {len(r)}")
            if any(v is None for v in r):
                raise BadInput("Vector contains NaN or infinite values (null)")
        raise BadRequest(f"vectors for '{name}' must be lists of numbers")
    if not np.isfinite(arr).all():
        raise BadInput("Vector contains NaN or infinite values")
    return arr


def prepared(cfg: CollectionConfig, name: str, positions: np.ndarray, arr: np.ndarray
             ) -> VectorRows:
    """Rows as stored: prepared for the vector's distance (Cosine: unit length)."""
    spec = cfg.vectors[name]
    return VectorRows(positions, spec.distance.prepare(arr).astype(np.float32, copy=False))


def split_vectors(cfg: CollectionConfig, per_point: list[Any]
                  ) -> tuple[dict[str, VectorRows], dict[str, SparseRows], dict[str, MultiRows]]:
    """[vector field of each point] → ({dense name: rows}, {sparse name: rows},
    {multivector name: rows}), positions indexing `per_point`.

    A point's vector is a bare list (the default vector) or a dict name → list (dense) or
    name → {indices, values} (sparse); a missing name means the point has no such vector.
    """
    buckets: dict[str, tuple[list[int], list[Any]]] = {}
    sparse_buckets: dict[str, tuple[list[int], list[Any]]] = {}
    multi_buckets: dict[str, tuple[list[int], list[Any]]] = {}
    for i, v in enumerate(per_point):
        if v is None:
            continue
        if isinstance(v, list) and cfg.is_multi(""):
            b = multi_buckets.setdefault("", ([], []))
            b[0].append(i)
            b[1].append(v)
        elif isinstance(v, list):
            if "" not in cfg.vectors:
                names = sorted(cfg.dense_names())
                raise BadInput(
                    "Unnamed vectors are not allowed when a collection has named vectors: "
                    f"{names}")
            b = buckets.setdefault("", ([], []))
            b[0].append(i)
            b[1].append(v)
        elif isinstance(v, dict):
            if is_sparse(v) and not isinstance(v.get("indices"), dict):
                raise BadInput("A sparse vector must be named: {\"<sparse name>\": "
                               "{\"indices\": [...], \"values\": [...]}}")
            for name, vec in v.items():
                if cfg.is_sparse(name):
                    if not isinstance(vec, dict) or set(vec) != {"indices", "values"}:
                        raise BadInput(f"Conversion between sparse and regular vectors failed "
                                       f"for vector '{name}': expected {{indices, values}}")
                    b = sparse_buckets.setdefault(name, ([], []))
                    b[0].append(i)
                    b[1].append(vec)
                    continue
                if cfg.is_multi(name):
                    if isinstance(vec, dict):
                        raise BadInput(f"Conversion between sparse and regular vectors failed "
                                       f"for vector '{name}': it is a multivector")
                    b = multi_buckets.setdefault(name, ([], []))
                    b[0].append(i)
                    b[1].append(vec)
                    continue
                if name not in cfg.vectors:
                    raise BadInput(f"Not existing vector name error: {name}")
                if isinstance(vec, dict):
                    raise BadInput(f"Conversion between sparse and regular vectors failed for "
                                   f"vector '{name}': it is a dense vector")
                b = buckets.setdefault(name, ([], []))
                b[0].append(i)
                b[1].append(vec)
        else:
            raise BadRequest("point vector must be a list or an object of named vectors")
    out = {}
    for name, (pos, rows) in buckets.items():
        arr = to_matrix(rows, cfg.vectors[name].size, name)
        out[name] = prepared(cfg, name, np.asarray(pos, dtype=np.int64), arr)
    sparse = {}
    for name, (pos, vecs) in sparse_buckets.items():
        batch = checked_batch([v["indices"] for v in vecs], [v["values"] for v in vecs], name)
        sparse[name] = SparseRows(np.asarray(pos, dtype=np.int64), batch)
    multi = {}
    for name, (pos, vecs) in multi_buckets.items():
        spec = cfg.multivectors[name]
        try:
            mbatch = checked_multi(vecs, spec.size, name)
        except ValidationError as exc:
            raise BadInput(str(exc)) from None
        multi[name] = MultiRows(np.asarray(pos, dtype=np.int64),
                                prepare_multi(mbatch, spec.distance.normalise))
    return out, sparse, multi
