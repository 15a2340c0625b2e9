"""Parsing of point-write request bodies into validated, batch-converted arrays.

Vectors are converted once per batch and per vector name (`np.asarray` over the list of
lists); the only per-point Python work is picking the right list out of each point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.config import CollectionConfig
from engine.errors import BadInput, BadRequest
from engine.ids import PointId, parse_ids


def numeric_array(raw: Any) -> np.ndarray | None:
    """`raw` (lists of JSON numbers) as float32, or None when it is not one: ragged, or
    holding strings or booleans (`np.asarray(..., dtype=float32)` alone would read "1" as 1.0
    and true as 1.0, which Qdrant refuses). Costs no more than the direct conversion."""
    try:
        arr = np.asarray(raw)
        if arr.dtype.kind == "O":  # integers beyond 64 bits (or ragged: that fails here)
            return np.asarray(raw, dtype=np.float32)
        if arr.dtype.kind not in "iuf":
            return None
        return arr.astype(np.float32, copy=False)
    except (ValueError, TypeError, OverflowError):
        return None


def _to_matrix(rows: list[Any], dim: int, name: str) -> np.ndarray:
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


def split_vectors(cfg: CollectionConfig, per_point: list[Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """[vector field of each point] → {name: (positions, (r, dim) array)}.

    A point's vector is a bare list (the default vector) or a dict name → list; a missing
    name means the point has no such vector.
    """
    buckets: dict[str, tuple[list[int], list[Any]]] = {}
    for i, v in enumerate(per_point):
        if v is None:
            continue
        if isinstance(v, list):
            if "" not in cfg.vectors:
                names = sorted(cfg.vectors)
                raise BadInput(
                    "Unnamed vectors are not allowed when a collection has named vectors: "
                    f"{names}")
            b = buckets.setdefault("", ([], []))
            b[0].append(i)
            b[1].append(v)
        elif isinstance(v, dict):
            if "indices" in v and "values" in v:
                raise BadInput("Sparse vectors are not supported by Quiver")
            for name, vec in v.items():
                if name not in cfg.vectors:
                    if name in cfg.sparse_vectors:
                        raise BadInput(f"Sparse vector '{name}' is not supported by Quiver")
                    raise BadInput(f"Not existing vector name error: {name}")
                if isinstance(vec, dict):
                    raise BadInput(f"Sparse vector '{name}' is not supported by Quiver")
                b = buckets.setdefault(name, ([], []))
                b[0].append(i)
                b[1].append(vec)
        else:
            raise BadRequest("point vector must be a list or an object of named vectors")
    out = {}
    for name, (pos, rows) in buckets.items():
        spec = cfg.vectors[name]
        arr = spec.distance.prepare(_to_matrix(rows, spec.size, name)).astype(np.float32,
                                                                              copy=False)
        out[name] = (np.asarray(pos, dtype=np.int64), arr)
    return out


def _check_payload(p: Any) -> dict[str, Any]:
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise BadRequest("payload must be a JSON object")
    return p


def parse_points(cfg: CollectionConfig, body: dict[str, Any]) -> tuple[
        list[PointId], dict[str, tuple[np.ndarray, np.ndarray]], list[dict[str, Any]]]:
    """PointInsertOperations (list form or batch form) → (ids, vectors, payloads), deduped
    so that the last occurrence of an id wins."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if body.get("points") is not None:
        points = body["points"]
        if not isinstance(points, list):
            raise BadRequest("`points` must be a list")
        if not all(isinstance(p, dict) for p in points):
            raise BadRequest("each point must be an object")
        try:
            raw_ids = [p["id"] for p in points]
        except KeyError:
            raise BadRequest("each point needs an `id`") from None
        ids = parse_ids(raw_ids)
        vectors_raw = [p.get("vector") for p in points]
        payloads = [_check_payload(p.get("payload")) for p in points]
    elif body.get("batch") is not None:
        batch = body["batch"]
        if not isinstance(batch, dict):
            raise BadRequest("`batch` must be an object")
        ids = parse_ids(batch.get("ids"))
        vecs = batch.get("vectors")
        if isinstance(vecs, np.ndarray):  # in-process callers (benchmarks, tools): no lists
            if vecs.ndim != 2 or len(vecs) != len(ids) or len(set(ids)) != len(ids):
                raise BadRequest("`batch.vectors` array must be (len(ids), dim), ids unique")
            spec = cfg.vector("")
            arr = _to_matrix(vecs, spec.size, "")
            pl = batch.get("payloads") or [{} for _ in ids]
            return ids, {"": (np.arange(len(ids), dtype=np.int64),
                              spec.distance.prepare(arr).astype(np.float32, copy=False))}, \
                [_check_payload(p) for p in pl]
        if isinstance(vecs, list):
            vectors_raw = vecs
        elif isinstance(vecs, dict):
            vectors_raw = [{} for _ in ids]
            for name, rows in vecs.items():
                if not isinstance(rows, list) or len(rows) != len(ids):
                    raise BadRequest(
                        f"number of ids and vectors must be equal ({len(ids)} != "
                        f"{len(rows) if isinstance(rows, list) else '?'})")
                for i, r in enumerate(rows):
                    vectors_raw[i][name] = r
        elif vecs is None:
            vectors_raw = [None] * len(ids)
        else:
            raise BadRequest("`batch.vectors` must be a list or an object")
        if len(vectors_raw) != len(ids):
            raise BadRequest(
                f"number of ids and vectors must be equal ({len(ids)} != {len(vectors_raw)})")
        pl = batch.get("payloads")
        if pl is None:
            payloads = [{} for _ in ids]
        elif isinstance(pl, list) and len(pl) == len(ids):
            payloads = [_check_payload(p) for p in pl]
        else:
            raise BadRequest("`batch.payloads` must be a list as long as `ids`")
    else:
        raise BadRequest("request needs `points` or `batch`")
    if len(set(ids)) != len(ids):
        last = {pid: i for i, pid in enumerate(ids)}  # last occurrence wins
        keep = sorted(last.values())
        ids = [ids[i] for i in keep]
        vectors_raw = [vectors_raw[i] for i in keep]
        payloads = [payloads[i] for i in keep]
    return ids, split_vectors(cfg, vectors_raw), payloads


def parse_vector_updates(cfg: CollectionConfig, body: dict[str, Any]) -> tuple[
        list[PointId], dict[str, tuple[np.ndarray, np.ndarray]]]:
    points = body.get("points") if isinstance(body, dict) else None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise BadRequest("`points` must be a list of {id, vector}")
    ids = parse_ids([p.get("id") for p in points])
    vecs = [p.get("vector") for p in points]
    if any(v is None for v in vecs):
        raise BadRequest("each point needs a `vector`")
    if len(set(ids)) != len(ids):
        last = {pid: i for i, pid in enumerate(ids)}
        keep = sorted(last.values())
        ids, vecs = [ids[i] for i in keep], [vecs[i] for i in keep]
    return ids, split_vectors(cfg, vecs)
