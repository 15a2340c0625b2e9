"""Which shard holds which point, and a write body cut into one body per shard."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import BadRequest
from engine.ids import ids_to_records, parse_id, parse_ids

_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def unsupported(what: str) -> BadRequest:
    return BadRequest(f"{what} is not supported in cluster mode yet")


def shard_of(ids: list[Any], shard_number: int) -> np.ndarray:
    """The shard of each (parsed) point id: splitmix64 of the id's 128-bit value folded to 64
    bits, modulo the shard count (as Qdrant's auto sharding, a hash of the id; the function
    is ours). Stable across processes and versions: data placement depends on it."""
    rec = ids_to_records(ids)
    with np.errstate(over="ignore"):
        x = rec["lo"] ^ (rec["hi"] * _MIX[0]) ^ rec["kind"].astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * _MIX[0]
        x = (x ^ (x >> np.uint64(27))) * _MIX[1]
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(shard_number)).astype(np.int64)


def _groups(shards: np.ndarray) -> dict[int, np.ndarray]:
    """shard → the positions (ascending) of its items."""
    order = np.argsort(shards, kind="stable")
    keys, starts = np.unique(shards[order], return_index=True)
    return {int(k): part for k, part in zip(keys.tolist(), np.split(order, starts[1:]),
                                            strict=True)}


def _pick(seq: list[Any], idx: np.ndarray) -> list[Any]:
    return [seq[i] for i in idx.tolist()]


def split_write(kind: str, body: dict[str, Any], n: int) -> dict[int, dict[str, Any]]:
    """{shard: body} for a (validated) write of `kind` (an api.parse.writes.WRITES name).
    Writes selected by a filter go to every shard."""
    if body.get("shard_key") is not None:
        raise BadRequest("shard_key needs a collection with sharding_method `custom`, which "
                         "is not supported in cluster mode yet")
    if kind == "upsert":
        if isinstance(body.get("points"), list):
            pts = body["points"]
            parts = _groups(shard_of([parse_id(p["id"]) for p in pts], n))
            return {s: {**body, "points": _pick(pts, idx)} for s, idx in parts.items()}
        batch = body["batch"]
        parts = _groups(shard_of(parse_ids(batch["ids"]), n))
        out = {}
        for s, idx in parts.items():
            b: dict[str, Any] = {"ids": _pick(batch["ids"], idx)}
            vec = batch.get("vectors")
            if isinstance(vec, dict):
                b["vectors"] = {k: _pick(v, idx) for k, v in vec.items()}
            elif vec is not None:
                b["vectors"] = _pick(vec, idx)
            if batch.get("payloads") is not None:
                b["payloads"] = _pick(batch["payloads"], idx)
            out[s] = {**body, "batch": {**batch, **b}}
        return out
    if kind == "update_vectors":
        pts = body["points"]
        parts = _groups(shard_of([parse_id(p["id"]) for p in pts], n))
        return {s: {**body, "points": _pick(pts, idx)} for s, idx in parts.items()}
    sel: Any = body.get("points")
    wrapped = isinstance(sel, dict) and sel.get("points") is not None  # a PointsSelector
    ids: Any = sel["points"] if wrapped else sel
    if not isinstance(ids, list):
        return dict.fromkeys(range(n), body)  # by filter: every shard
    parts = _groups(shard_of(parse_ids(ids), n))

    def part(idx: np.ndarray) -> Any:
        return {**sel, "points": _pick(ids, idx)} if wrapped else _pick(ids, idx)
    return {s: {**body, "points": part(idx)} for s, idx in parts.items()} or {0: body}
