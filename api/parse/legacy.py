"""Legacy recommend / discover bodies → universal query bodies.

Qdrant's server answers /points/recommend and /points/discover through its query path; so
does Quiver: these turn a legacy body into the QueryRequest body (`{"query": {"recommend":
{...}}, ...}`) that api/parse/reads.py parses, so the legacy endpoints and the groups
endpoint share one implementation. The common fields (filter, params, limit, offset,
with_payload, with_vector, score_threshold, using, lookup_from) carry over as they are.
"""

from __future__ import annotations

from typing import Any

from engine.errors import BadRequest

_COMMON = ("filter", "params", "limit", "offset", "with_payload", "with_vector",
           "score_threshold", "using", "lookup_from", "shard_key",
           "group_by", "group_size", "with_lookup")  # the last three: the groups endpoint


def _common(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in _COMMON if k in body and body[k] is not None}


def _examples(body: dict[str, Any], key: str) -> list[Any]:
    raw = body.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest(f"`{key}` must be a list of point ids or vectors")
    return raw


def recommend_as_query(body: dict[str, Any]) -> dict[str, Any]:
    """A legacy RecommendRequest (positive, negative, strategy, ...) as a QueryRequest body."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    rec: dict[str, Any] = {"positive": _examples(body, "positive"),
                           "negative": _examples(body, "negative")}
    if body.get("strategy") is not None:
        rec["strategy"] = body["strategy"]
    out = _common(body)
    out["query"] = {"recommend": rec}
    return out


def discover_as_query(body: dict[str, Any]) -> dict[str, Any]:
    """A legacy DiscoverRequest (target, context pairs, ...) as a QueryRequest body; without
    a target it is a context query, as Qdrant's server treats it."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    context = body.get("context")
    pairs = [] if context is None else context if isinstance(context, list) else [context]
    out = _common(body)
    target = body.get("target")
    if target is None:
        out["query"] = {"context": pairs}
    else:
        out["query"] = {"discover": {"target": target, "context": pairs}}
    return out
