"""Grouped search (POST /points/query/groups and the legacy search/recommend groups).

A grouped search runs a query plan (engine/query_plan.py) for its candidates and groups
them by the values of a payload key, as Qdrant: a point belongs to the group of each
distinct value of `group_by` (an array: each element; a point with a value that is neither
a string nor an integer joins no group, as the server drops it), groups are ordered by their
best hit, each keeps its `group_size` best hits, and the first `limit` groups are returned.

The candidates come in rounds: `limit * group_size` first (prefetch limits are multiplied by
`group_size`, as the server does), then a larger limit until the first `limit` groups are
full or the candidates run out. Only the key's payload is rendered while grouping; the hits
that make it into a group get the request's payload and vector selectors at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import query_plan
from engine.errors import BadRequest
from engine.ids import PointId, parse_id
from engine.payload import raw_values_at
from engine.plan import QueryRequest, RetrieveRequest
from engine.retrieve import retrieve
from engine.view import Readable

GROWTH = 4  # each round asks for this many times more candidates than the last
MAX_ROUNDS = 5  # as Qdrant's MAX_GET_GROUPS_REQUESTS: then the groups are returned partial


@dataclass
class WithLookup:
    """Each group's `lookup`: the point of another collection whose id is the group id."""

    collection: Readable
    with_payload: Any = True
    with_vector: Any = False


@dataclass
class GroupsRequest:
    plan: QueryRequest  # the candidates' query; its selectors render the key only
    group_by: str
    group_size: int
    limit: int  # groups
    with_payload: Any
    with_vector: Any
    lookup: WithLookup | None = None


def key_selector(group_by: str) -> list[str]:
    """The payload selector grouping needs: the key, without a trailing `[]`."""
    return [group_by[:-2] if group_by.endswith("[]") else group_by]


def _set_limit(node: QueryRequest, limit: int) -> None:
    node.limit = limit
    if node.nearest is not None:
        node.nearest.limit = limit


def _scale_prefetch(nodes: list[QueryRequest], factor: int) -> None:
    """Prefetches fetch `factor` times their limit: enough candidates to fill groups."""
    for node in nodes:
        _set_limit(node, node.limit * factor)
        _scale_prefetch(node.prefetch, factor)


def _group_values(payload: Any, key: str) -> list[Any] | None:
    """The distinct group ids of a point (payload order), None when it joins no group."""
    if not isinstance(payload, dict):
        return None
    values: list[Any] = []
    for v in raw_values_at(payload, key):
        if isinstance(v, list):
            values.extend(v)
        else:
            values.append(v)
    if any(type(v) not in (str, int) for v in values):  # bool is not a group id
        return None
    return list(dict.fromkeys(values))


@dataclass
class _Grouping:
    values: list[Any]  # group ids, best group first
    members: list[np.ndarray]  # per group: indices into the hits, best first
    full: bool  # the first `limit` groups all have `group_size` hits


def _group(hits: list[dict[str, Any]], key: str, size: int, limit: int) -> _Grouping:
    """Assign hits to groups: one pass reads each hit's values; ranks within groups, group
    order and truncation are numpy over (hit, group) pairs."""
    codes: dict[Any, int] = {}  # group id → code, in order of first appearance (best hit)
    pair_hit: list[int] = []
    pair_code: list[int] = []
    for i, hit in enumerate(hits):
        values = _group_values(hit.get("payload"), key)
        if not values:
            continue
        for v in values:
            pair_hit.append(i)
            pair_code.append(codes.setdefault(v, len(codes)))
    values = list(codes)[:limit]
    if not values:
        return _Grouping([], [], False)
    hit_idx = np.asarray(pair_hit, dtype=np.int64)
    code = np.asarray(pair_code, dtype=np.int64)
    keep = code < len(values)
    hit_idx, code = hit_idx[keep], code[keep]
    order = np.argsort(code, kind="stable")  # by group, hits still in rank order
    hit_idx, code = hit_idx[order], code[order]
    starts = np.searchsorted(code, np.arange(len(values)))
    rank = np.arange(len(code)) - starts[code]
    sel = rank < size
    counts = np.bincount(code[sel], minlength=len(values))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    taken = hit_idx[sel]
    members = [taken[bounds[g]:bounds[g + 1]] for g in range(len(values))]
    full = len(values) == limit and bool((counts >= size).all())
    return _Grouping(values, members, full)


def _render_hits(coll: Readable, req: GroupsRequest, hits: list[dict[str, Any]],
                 used: np.ndarray) -> dict[int, dict[str, Any]]:
    """The hits that made it into groups, with the request's selectors (rendered once each
    even when a point is in several groups)."""
    out: dict[int, dict[str, Any]] = {}
    records: dict[Any, dict[str, Any]] = {}
    if not (req.with_payload is False and req.with_vector is False):
        ids: list[PointId] = [hits[i]["id"] for i in used.tolist()]
        for rec in retrieve(coll, RetrieveRequest(ids, req.with_payload, req.with_vector)):
            records[rec["id"]] = rec
    for i in used.tolist():
        hit = hits[i]
        rec = {"id": hit["id"], "version": hit.get("version", 0), "score": hit["score"]}
        got = records.get(hit["id"])
        if got is not None:
            rec.update((k, v) for k, v in got.items() if k in ("payload", "vector"))
        out[i] = rec
    return out


def _lookups(lookup: WithLookup, values: list[Any]) -> list[dict[str, Any] | None]:
    """Each group's point in the lookup collection (None: no point has that id)."""
    ids: list[PointId] = []
    for v in values:
        try:
            ids.append(parse_id(v))
        except BadRequest:  # a group id that is no point id names no point
            continue
    found = {rec["id"]: rec for rec in retrieve(
        lookup.collection, RetrieveRequest(ids, lookup.with_payload, lookup.with_vector))}
    out: list[dict[str, Any] | None] = []
    for v in values:
        try:
            out.append(found.get(parse_id(v)))
        except BadRequest:
            out.append(None)
    return out


def query_groups(coll: Readable, req: GroupsRequest) -> list[dict[str, Any]]:
    """The groups of a grouped search, best first: [{"id", "hits", "lookup"?}]."""
    _scale_prefetch(req.plan.prefetch, req.group_size)
    want = req.limit * req.group_size
    for _ in range(MAX_ROUNDS):
        _set_limit(req.plan, want)
        hits = query_plan.execute(coll, [req.plan])[0]
        grouping = _group(hits, req.group_by, req.group_size, req.limit)
        if grouping.full or len(hits) < want:  # settled, or no more candidates
            break
        want *= GROWTH
    used = np.unique(np.concatenate(grouping.members)) if grouping.members else \
        np.empty(0, np.int64)
    rendered = _render_hits(coll, req, hits, used)
    lookups = _lookups(req.lookup, grouping.values) if req.lookup is not None else None
    groups: list[dict[str, Any]] = []
    for g, value in enumerate(grouping.values):
        group: dict[str, Any] = {"id": value,
                                 "hits": [rendered[i] for i in grouping.members[g].tolist()]}
        if lookups is not None and lookups[g] is not None:
            group["lookup"] = lookups[g]
        groups.append(group)
    return groups
