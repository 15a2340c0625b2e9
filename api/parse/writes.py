"""Point-write request bodies → typed write operations (engine/operations.py).

Everything a body can get wrong is found here, before the collection takes its write lock;
what needs the collection's state (a filter's points, whether explicit ids exist) is left to
`Collection.write`. Vectors come out prepared for their distance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from api.parse.vectors import prepared, split_vectors, to_matrix
from engine import payload as payload_paths
from engine import strict
from engine.config import CollectionConfig
from engine.errors import BadRequest
from engine.filters import parse_filter
from engine.ids import PointId, parse_ids
from engine.operations import (
    UPDATE_MODES,
    ClearPayload,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    Operation,
    OverwritePayload,
    SetPayload,
    UpdateVectors,
    Upsert,
)

if TYPE_CHECKING:
    from engine.collection import Collection


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _payload(p: Any) -> dict[str, Any]:
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise BadRequest("payload must be a JSON object")
    return p


def _last_wins(ids: list[PointId], *columns: list[Any]) -> tuple[list[Any], ...]:
    """Drop all but the last occurrence of each id (from ids and the parallel columns)."""
    if len(set(ids)) == len(ids):
        return (ids, *columns)
    keep = sorted({pid: i for i, pid in enumerate(ids)}.values())
    return tuple([col[i] for i in keep] for col in (ids, *columns))


def _selection(body: dict[str, Any], field: str = "points") -> tuple[list[PointId],
                                                                    dict[str, Any]]:
    """The points a write touches: explicit ids, or a filter (a PointsSelector may wrap
    either) → (ids, {"filter": predicate} or {})."""
    sel = body.get(field)
    flt = body.get("filter")
    if isinstance(sel, dict) and ("points" in sel or "filter" in sel):  # PointsSelector
        flt = sel.get("filter", flt)
        sel = sel.get("points")
    if sel is not None:
        return parse_ids(sel), {}
    if flt is not None:
        return [], {"filter": parse_filter(flt)}
    raise BadRequest(f"request needs `{field}` or `filter`")


# ---- upsert -----------------------------------------------------------------------------------


def _numpy_batch(cfg: CollectionConfig, ids: list[PointId], batch: dict[str, Any]) -> Upsert:
    """In-process callers (benchmarks, tools) may give the default vector as one array."""
    vecs = batch["vectors"]
    if vecs.ndim != 2 or len(vecs) != len(ids) or len(set(ids)) != len(ids):
        raise BadRequest("`batch.vectors` array must be (len(ids), dim), ids unique")
    spec = cfg.vector("")
    arr = to_matrix(vecs, spec.size, "")
    pl = batch.get("payloads") or [{} for _ in ids]
    return Upsert(ids, {spec.name: prepared(cfg, spec.name, np.arange(len(ids), dtype=np.int64),
                                            arr)}, [_payload(p) for p in pl])


def upsert_op(cfg: CollectionConfig, body: Any) -> Upsert:
    """PointInsertOperations (list form or batch form) → Upsert, deduped so that the last
    occurrence of an id wins. Also the in-process way to write: `coll.write(upsert_op(...))`."""
    body = _object(body)
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
        payloads = [_payload(p.get("payload")) for p in points]
    elif body.get("batch") is not None:
        batch = body["batch"]
        if not isinstance(batch, dict):
            raise BadRequest("`batch` must be an object")
        ids = parse_ids(batch.get("ids"))
        vecs = batch.get("vectors")
        if isinstance(vecs, np.ndarray):  # in-process bulk loads (bench, tools), never HTTP
            if body.get("update_mode") is not None or body.get("update_filter") is not None:
                raise BadRequest("update_mode / update_filter need the JSON point forms")
            return _numpy_batch(cfg, ids, batch)
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
            payloads = [_payload(p) for p in pl]
        else:
            raise BadRequest("`batch.payloads` must be a list as long as `ids`")
    else:
        raise BadRequest("request needs `points` or `batch`")
    ids, vectors_raw, payloads = _last_wins(ids, vectors_raw, payloads)
    dense, sparse, multi = split_vectors(cfg, vectors_raw)
    mode = body.get("update_mode")
    if mode is None:
        mode = "upsert"
    elif mode not in UPDATE_MODES:
        raise BadRequest(f"unknown variant `{mode}`, expected one of "
                         + ", ".join(f"`{m}`" for m in UPDATE_MODES) + " (`update_mode`)")
    return Upsert(ids, dense, payloads, sparse, multi,
                  update_filter=parse_filter(body.get("update_filter")), update_mode=mode)


# ---- the other writes -------------------------------------------------------------------------


def delete_op(cfg: CollectionConfig, body: Any) -> DeletePoints:
    ids, sel = _selection(_object(body))
    return DeletePoints(ids, **sel)


def _payload_op(kind: str, body: Any) -> Operation:
    body = _object(body)
    op: Operation
    if kind in ("set_payload", "overwrite_payload"):
        pl = body.get("payload")
        if not isinstance(pl, dict):
            raise BadRequest("`payload` must be an object")
        key = None
        if kind == "set_payload" and body.get("key") is not None:
            key = body["key"]
            if not isinstance(key, str):
                raise BadRequest("`key` must be a string")
            payload_paths.parse_path(key)
        ids, sel = _selection(body)
        op = SetPayload(ids, pl, key, **sel) if kind == "set_payload" \
            else OverwritePayload(ids, pl, **sel)
    elif kind == "delete_payload":
        keys = body.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BadRequest("`keys` must be a list of strings")
        for k in keys:
            payload_paths.parse_path(k)
        ids, sel = _selection(body)
        op = DeletePayload(ids, keys, **sel)
    else:
        ids, sel = _selection(body)
        op = ClearPayload(ids, **sel)
    return op


def set_payload_op(cfg: CollectionConfig, body: Any) -> Operation:
    return _payload_op("set_payload", body)


def overwrite_payload_op(cfg: CollectionConfig, body: Any) -> Operation:
    return _payload_op("overwrite_payload", body)


def delete_payload_op(cfg: CollectionConfig, body: Any) -> Operation:
    return _payload_op("delete_payload", body)


def clear_payload_op(cfg: CollectionConfig, body: Any) -> Operation:
    return _payload_op("clear_payload", body)


def update_vectors_op(cfg: CollectionConfig, body: Any) -> UpdateVectors:
    points = body.get("points") if isinstance(body, dict) else None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise BadRequest("`points` must be a list of {id, vector}")
    ids = parse_ids([p.get("id") for p in points])
    vecs = [p.get("vector") for p in points]
    if any(v is None for v in vecs):
        raise BadRequest("each point needs a `vector`")
    ids, vecs = _last_wins(ids, vecs)
    dense, sparse, multi = split_vectors(cfg, vecs)
    return UpdateVectors(ids, dense, sparse, multi,
                         update_filter=parse_filter(body.get("update_filter")))


def delete_vectors_op(cfg: CollectionConfig, body: Any) -> DeleteVectors:
    names = body.get("vector") if isinstance(body, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("`vector` must be a list of vector names")
    for n in names:
        cfg.search_name(n)  # 400 unless a dense or sparse vector of the collection
    ids, sel = _selection(body)
    return DeleteVectors(ids, names, **sel)


# every point write by its name in POST /points/batch
WRITES = {
    "upsert": upsert_op,
    "delete": delete_op,
    "set_payload": set_payload_op,
    "overwrite_payload": overwrite_payload_op,
    "delete_payload": delete_payload_op,
    "clear_payload": clear_payload_op,
    "update_vectors": update_vectors_op,
    "delete_vectors": delete_vectors_op,
}


def apply_body(coll: Collection, kind: str, body: Any) -> int:
    """Parse a write body of `kind` (a WRITES name) against the collection's config and apply
    it; returns its WAL sequence number. The API's writes and in-process callers (benchmarks,
    tests, tools) all go through here."""
    op = WRITES[kind](coll.config, body)
    strict.check_write(coll, kind, body)  # strict mode (engine/strict.py): after the parse
    return coll.write(op)


def batch_ops(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """POST /points/batch → [(write name, its body)], the shape of every operation checked
    before any is parsed or applied (each is parsed and applied in turn, as Qdrant does)."""
    ops = body.get("operations")
    if not isinstance(ops, list):
        raise BadRequest("`operations` must be a list")
    for op in ops:
        if not isinstance(op, dict) or len(op) != 1 or next(iter(op)) not in WRITES:
            raise BadRequest(f"invalid batch operation: {op!r}")
    out = []
    for op in ops:
        (kind, args), = op.items()
        if kind == "clear_payload" and isinstance(args, dict) and "points" not in args \
                and "filter" not in args:
            args = {"points": args}  # Qdrant's batch form: clear_payload takes the selector
        out.append((kind, args))
    return out
