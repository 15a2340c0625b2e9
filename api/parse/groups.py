"""Grouped search bodies → engine.groups.GroupsRequest.

QueryGroupsRequest (POST /points/query/groups) takes everything a QueryRequest takes, less
`offset`, plus `group_by`, `group_size` (default 3), `limit` (groups, default 10) and
`with_lookup`. The legacy SearchGroupsRequest / RecommendGroupsRequest (group_size and limit
required) become query bodies first (`search_as_query` here, api/parse/legacy.py for
recommend). The candidates' query is parsed by api/parse/reads.py with a filter that drops
points without the key (as the server) and a payload selector of the key only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.parse import common, reads
from engine.errors import BadInput, BadRequest
from engine.groups import GroupsRequest, WithLookup, key_selector

if TYPE_CHECKING:
    from engine.collection import Collection

GROUP_FIELDS = ("group_by", "group_size", "limit", "with_lookup", "with_payload",
                "with_vector", "with_vectors", "offset")


def _positive(body: dict[str, Any], field: str, default: int | None) -> int:
    v = body.get(field)
    if v is None:
        if default is None:  # a required field of the legacy bodies
            raise BadRequest(f"Json deserialize error: missing field `{field}`")
        return default
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise BadRequest(f"{field} value {v} is invalid. Must be 1 or larger.")
    return v


def _group_by(body: dict[str, Any]) -> str:
    g = body.get("group_by")
    if g is None:
        raise BadRequest("Json deserialize error: missing field `group_by`")
    if not isinstance(g, str) or not g:
        raise BadRequest("`group_by` must be a non-empty payload key")
    return g


def _with_lookup(raw: Any, lookup: reads.Lookup) -> WithLookup | None:
    """`with_lookup`: a collection name, or {collection, with_payload, with_vectors}; the
    collection must exist (404 otherwise)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return WithLookup(lookup(raw))
    if not isinstance(raw, dict) or not isinstance(raw.get("collection"), str):
        raise BadRequest("`with_lookup` must be a collection name or {\"collection\": ...}")
    wp = raw.get("with_payload")
    wv = raw.get("with_vectors", raw.get("with_vector"))
    return WithLookup(lookup(raw["collection"]), True if wp is None else wp,
                      False if wv is None else wv)


def groups_request(coll: Collection, body: dict[str, Any], lookup: reads.Lookup,
                   legacy: bool = False) -> GroupsRequest:
    """A QueryGroupsRequest body (or a legacy one already turned into a query body, with
    `legacy`: group_size and limit required) as a grouped search."""
    group_by = _group_by(body)
    size = _positive(body, "group_size", None if legacy else 3)
    limit = _positive(body, "limit", None if legacy else 10)
    wp, wv = common.selectors(body, payload_default=False)
    q = {k: v for k, v in body.items() if k not in GROUP_FIELDS}
    not_empty = {"must_not": [{"is_empty": {"key": key_selector(group_by)[0]}}]}
    q["filter"] = reads.merge_filters(body.get("filter"), not_empty)
    q["limit"] = limit * size  # the first round; engine/groups.py grows it
    q["with_payload"] = key_selector(group_by)
    plan = reads.query_request(coll, q, lookup)
    return GroupsRequest(plan, group_by, size, limit, wp, wv,
                         _with_lookup(body.get("with_lookup"), lookup))


def search_as_query(body: dict[str, Any]) -> dict[str, Any]:
    """A legacy SearchGroupsRequest (`vector`: a vector or {name, vector}) as a query body."""
    out = {k: v for k, v in body.items() if k != "vector"}
    v = body.get("vector")
    if v is None:
        raise BadRequest("Json deserialize error: missing field `vector`")
    if isinstance(v, dict):
        if "name" not in v or "vector" not in v:
            raise BadInput("a sparse search vector needs a name: {\"name\": ..., \"vector\": "
                           "{\"indices\": [...], \"values\": [...]}}")
        out["using"], v = v["name"], v["vector"]
    out["query"] = {"nearest": v}
    return out
