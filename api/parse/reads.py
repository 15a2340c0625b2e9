"""Read request bodies → typed requests (engine/plan.py): query, search, scroll, count,
retrieve. Each body is checked in the order Qdrant reports its errors; selectors get their
per-endpoint defaults here (see common.selectors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from api.parse import common
from api.parse.vectors import query_vector
from engine import query as engine_reads
from engine.columns import parse_datetime
from engine.errors import BadInput, BadRequest
from engine.filters import parse_filter
from engine.ids import PointId, parse_id
from engine.plan import (
    CountRequest,
    OrderBy,
    QueryRequest,
    RetrieveRequest,
    ScrollRequest,
    SearchSpec,
)

if TYPE_CHECKING:
    from engine.collection import Collection


def _spec(coll: Collection, b: dict[str, Any], vector: np.ndarray, using: str | None,
          exclude: tuple[PointId, ...] = ()) -> SearchSpec:
    """The nearest search a query or search body asks for (payload not returned by default)."""
    flt = b.get("filter")
    hnsw_ef, exact = common.search_params(b.get("params"))
    name = coll.config.vector(using).name
    pred = parse_filter(flt)
    lim = common.limit(b.get("limit", b.get("top")))
    off = common.offset(b.get("offset"))
    threshold = common.score_threshold(b.get("score_threshold"))
    wp, wv = common.selectors(b, payload_default=False)
    return SearchSpec(vector=vector, using=name, pred=pred, limit=lim, offset=off,
                      score_threshold=threshold, with_payload=wp, with_vector=wv,
                      exclude_ids=exclude, hnsw_ef=hnsw_ef, exact=exact,
                      filter_key=orjson.dumps(flt).decode() if flt is not None else "")


def _nearest(coll: Collection, b: dict[str, Any]) -> SearchSpec | None:
    """The `query` of a QueryRequest as a nearest search; None when there is none."""
    if b.get("prefetch"):
        raise BadRequest("`prefetch` (hybrid queries) is not supported by Quiver yet")
    if b.get("lookup_from") is not None:
        raise BadRequest("`lookup_from` is not supported by Quiver yet")
    q = b.get("query")
    using = b.get("using")
    if q is None:
        return None
    if isinstance(q, dict):
        if "nearest" in q:
            q = q["nearest"]
        else:
            kind = next(iter(q), "?")
            raise BadRequest(f"query type `{kind}` is not supported by Quiver yet")
    if isinstance(q, dict):
        raise BadInput("Sparse vector queries are not supported by Quiver")
    if isinstance(q, int | str) and not isinstance(q, bool):  # by point id: its own vector
        pid = parse_id(q)
        vec = engine_reads.vector_of_point(coll, pid, using or "")
        return _spec(coll, b, vec, using, exclude=(pid,))
    return _spec(coll, b, query_vector(q), using)


def query_request(coll: Collection, b: dict[str, Any]) -> QueryRequest:
    """One QueryRequest body (POST /points/query, or one of /points/query/batch)."""
    spec = _nearest(coll, b)
    if spec is not None:
        return QueryRequest(spec, spec.pred, spec.limit, spec.offset, spec.with_payload,
                            spec.with_vector)
    lim = common.limit(b.get("limit"))
    off = common.offset(b.get("offset"))
    pred = parse_filter(b.get("filter"))
    wp, wv = common.selectors(b, payload_default=False)
    return QueryRequest(None, pred, lim, off, wp, wv)


def searches(body: dict[str, Any]) -> list[Any]:
    """The `searches` list of a batch body (its items are checked one by one)."""
    items = body.get("searches")
    if not isinstance(items, list):
        raise BadRequest("`searches` must be a list")
    return items


def search_request(coll: Collection, b: dict[str, Any]) -> SearchSpec:
    """A legacy SearchRequest body (POST /points/search, or one of /points/search/batch)."""
    v = b.get("vector")
    using = None
    if isinstance(v, dict):
        if "name" in v and "vector" in v:
            using, v = v["name"], v["vector"]
        else:
            raise BadInput("Sparse vector search is not supported by Quiver")
    return _spec(coll, b, query_vector(v), using)


# ---- scroll, count, retrieve ------------------------------------------------------------------


def order_by(raw: Any) -> OrderBy:
    """`order_by`: a payload key, or {key, direction, start_from}."""
    if isinstance(raw, str):
        return OrderBy(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("key"), str):
        raise BadRequest("`order_by` needs a `key`")
    direction = raw.get("direction") or "asc"
    if direction not in ("asc", "desc"):
        raise BadRequest("`order_by.direction` must be asc or desc")
    start = raw.get("start_from")
    start_v = None
    if start is not None:
        if isinstance(start, int | float) and not isinstance(start, bool):
            start_v = float(start)
        elif isinstance(start, str):
            ts = parse_datetime(start)
            if np.isnan(ts):
                raise BadRequest(f"invalid `start_from`: {start!r}")
            start_v = ts * 1e6
        else:
            raise BadRequest("`start_from` must be a number or datetime")
    return OrderBy(raw["key"], direction == "desc", start_v)


def scroll_request(b: dict[str, Any]) -> ScrollRequest:
    lim = common.limit(b.get("limit"))
    pred = parse_filter(b.get("filter"))
    wp, wv = common.selectors(b, payload_default=True)
    raw_offset = b.get("offset")
    if b.get("order_by") is not None:
        if raw_offset is not None:
            raise BadRequest(
                "Offset is not supported in conjunction with `order_by` scroll parameter")
        return ScrollRequest(pred, lim, None, wp, wv, order_by(b["order_by"]))
    start = parse_id(raw_offset) if raw_offset is not None else None
    return ScrollRequest(pred, lim, start, wp, wv)


def count_request(b: dict[str, Any]) -> CountRequest:
    return CountRequest(parse_filter(b.get("filter")))


def retrieve_request(b: dict[str, Any]) -> RetrieveRequest:
    raw = b.get("ids")
    if not isinstance(raw, list):
        raise BadRequest("`ids` must be a list")
    ids: list[PointId] = []
    for i in raw:  # an id that does not parse names no point: Qdrant skips it
        try:
            ids.append(parse_id(i))
        except BadRequest:
            continue
    wp, wv = common.selectors(b, payload_default=True)
    return RetrieveRequest(ids, wp, wv)
