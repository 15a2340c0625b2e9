"""Read request bodies → typed requests (engine/plan.py): query, search, scroll, count,
retrieve. Each body is checked in the order Qdrant reports its errors; selectors get their
per-endpoint defaults here (see common.selectors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from api.parse import common, vectors
from engine import query as engine_reads
from engine.columns import parse_datetime
from engine.errors import BadInput, BadRequest
from engine.filters import parse_filter
from engine.formula import parse_formula
from engine.fusion import DEFAULT_RRF_K
from engine.ids import PointId, parse_id
from engine.multivector import MultiVector
from engine.plan import (
    CountRequest,
    Fusion,
    Mmr,
    OrderBy,
    QueryRequest,
    RetrieveRequest,
    ScrollRequest,
    SearchSpec,
)
from engine.recommend import (
    STRATEGIES,
    ExampleQuery,
    average_multi,
    average_sparse,
    average_vector,
)
from engine.sparse import SparseVector

if TYPE_CHECKING:
    from engine.collection import Collection


def _spec(coll: Collection, b: dict[str, Any], vector: Any, using: str | None,
          exclude: tuple[PointId, ...] = ()) -> SearchSpec:
    """The nearest search a query or search body asks for (payload not returned by default)."""
    flt = b.get("filter")
    hnsw_ef, exact = common.search_params(b.get("params"))
    name = coll.config.search_name(using)  # a dense or a sparse vector
    pred = parse_filter(flt)
    lim = common.limit(b.get("limit", b.get("top")))
    off = common.offset(b.get("offset"))
    threshold = common.score_threshold(b.get("score_threshold"))
    wp, wv = common.selectors(b, payload_default=False)
    return SearchSpec(vector=vector, using=name, pred=pred, limit=lim, offset=off,
                      score_threshold=threshold, with_payload=wp, with_vector=wv,
                      exclude_ids=exclude, hnsw_ef=hnsw_ef, exact=exact,
                      quantization=common.quantization_params(b.get("params")),
                      filter_key=orjson.dumps(flt).decode() if flt is not None else "")


MAX_PREFETCH_DEPTH = 16  # nesting levels below the request; deeper is refused (400)
NEXT_ISSUE_KINDS = ("relevance_feedback",)
EXAMPLE_KINDS = ("recommend", "discover", "context")
Lookup = Callable[[str], Any]  # collection name → collection (the catalog's `get`)


def merge_filters(outer: Any, inner: Any) -> Any:
    """A parent's filter propagated into a prefetch, as the server's `Filter::merge_opts`:
    clause lists are concatenated (so `should` alternatives of both levels pool together),
    `min_should` conditions too, with the larger `min_count`. Both are valid filters."""
    if outer is None:
        return inner
    if inner is None:
        return outer

    def clause(a: Any, b: Any) -> list[Any] | None:
        if a is None and b is None:
            return None
        as_list = [(x if isinstance(x, list) else [x]) for x in (a, b) if x is not None]
        return [c for part in as_list for c in part]

    out: dict[str, Any] = {}
    for k in ("must", "should", "must_not"):
        merged = clause(outer.get(k), inner.get(k))
        if merged is not None:
            out[k] = merged
    a, b = outer.get("min_should"), inner.get("min_should")
    if a is not None or b is not None:
        out["min_should"] = a if b is None else b if a is None else {
            "conditions": clause(a.get("conditions"), b.get("conditions")) or [],
            "min_count": max(a["min_count"], b["min_count"])}
    return out


def _query_kind(q: Any) -> tuple[str, Any]:
    """The kind of a `query` (a QueryInterface) and its argument."""
    if q is None:
        return "none", None
    if isinstance(q, dict):
        for kind in ("nearest", "fusion", "rrf", "formula", "order_by", "sample",
                     *EXAMPLE_KINDS):
            if kind in q:
                return kind, q
        if "indices" in q and "values" in q:
            return "nearest", {"nearest": q}
        kind = next(iter(q), "?")
        if kind in NEXT_ISSUE_KINDS:
            raise BadRequest(f"query type `{kind}` is not supported by Quiver yet")
        raise BadRequest(f"unknown query type `{kind}`")
    return "nearest", {"nearest": q}


def _vector(coll: Any, raw: Any, using: str | None, lookup_from: Any, lookup: Lookup | None,
            ) -> tuple[Any, PointId | None]:
    """A nearest query's vector, and the point id it was taken from (to exclude) when that
    point lives in this collection."""
    if isinstance(raw, int | str) and not isinstance(raw, bool):  # by point id
        pid = parse_id(raw)
        if lookup_from is None:
            return engine_reads.vector_of_point(coll, pid, using or ""), pid
        if lookup is None:
            raise BadRequest("`lookup_from` needs the collection catalog")
        other = lookup(lookup_from["collection"])
        name = lookup_from.get("vector")
        return engine_reads.vector_of_point(other, pid, name if name is not None else
                                            (using or "")), None
    if isinstance(raw, dict) and not vectors.is_sparse(raw):
        raise BadRequest("unsupported vector input in `nearest`")
    return vectors.parse_query_vector(raw, using, coll.config), None


def _example_query(coll: Any, kind: str, raw: Any, using: str | None, lookup_from: Any,
                   lookup: Lookup | None) -> tuple[Any, list[PointId]]:
    """A recommend / discover / context query: the vector of an average_vector
    recommendation (a plain nearest search), or an ExampleQuery scored exactly; and the
    ids of the examples taken from this collection (excluded from the results, as Qdrant)."""
    name = coll.config.search_name(using)
    sparse, multi = coll.config.is_sparse(name), coll.config.is_multi(name)
    if (sparse or multi) and (kind != "recommend" or not isinstance(raw, dict)
                              or (raw.get("strategy") or "average_vector") != "average_vector"):
        what = "sparse vector" if sparse else "multivector"
        how = kind if kind != "recommend" else f"recommend `{raw.get('strategy')}`"
        raise BadRequest(f"`{how}` queries over a {what} are not supported by Quiver yet "
                         "(average_vector recommendation is)")
    dim = 0 if sparse or multi else coll.config.vector(name).size
    same = lookup_from is not None and lookup is not None and \
        lookup(lookup_from["collection"]) is coll  # ids from here: excluded too
    excluded: list[PointId] = []

    def one(ex: Any) -> Any:
        """An example's (d,) float32 vector (sparse / multivector names: as parsed)."""
        if ex is None:
            raise BadRequest(f"`{kind}` examples must be point ids or vectors")
        vec, pid = _vector(coll, ex, using, lookup_from, lookup)
        if pid is None and same and isinstance(ex, int | str) and not isinstance(ex, bool):
            pid = parse_id(ex)
        if pid is not None:
            excluded.append(pid)
        if sparse or multi:  # average_vector only: kept as they are, averaged below
            if not isinstance(vec, SparseVector if sparse else MultiVector):
                raise BadRequest(f"`{kind}` examples for vector '{name}' must be "
                                 + ("sparse vectors" if sparse else "multivectors")
                                 + " or point ids")
            return vec
        if not isinstance(vec, np.ndarray):
            raise BadRequest(f"`{kind}` examples must be dense vectors or point ids")
        if vec.shape[0] != dim:
            raise BadInput(f"Vector dimension error: expected dim: {dim}, got {vec.shape[0]}")
        return vec.astype(np.float32, copy=False)

    def stack(items: list[Any]) -> Any:
        """(k, dim) float32; for a sparse or multivector name, the list of examples."""
        vecs = [one(x) for x in items]
        if sparse or multi:
            return vecs
        return np.stack(vecs) if vecs else np.empty((0, dim), np.float32)

    def as_list(v: Any, what: str) -> list[Any]:
        if v is None:
            return []
        if not isinstance(v, list):
            raise BadRequest(f"`{what}` must be a list of point ids or vectors")
        return v

    if kind == "recommend":
        if not isinstance(raw, dict):
            raise BadRequest("`recommend` must be an object with `positive` and `negative`")
        strategy = raw.get("strategy") or "average_vector"
        if strategy not in STRATEGIES:
            raise BadRequest(f"unknown recommend strategy `{strategy}`: expected one of "
                             + ", ".join(STRATEGIES))
        pos = stack(as_list(raw.get("positive"), "positive"))
        neg = stack(as_list(raw.get("negative"), "negative"))
        if strategy == "average_vector":
            if len(pos) == 0:
                raise BadRequest("At least one positive vector ID required with this strategy")
            if sparse:
                return average_sparse(list(pos), list(neg)), excluded
            if multi:
                return average_multi(list(pos), list(neg)), excluded
            return average_vector(pos, neg), excluded
        if len(pos) == 0 and len(neg) == 0:
            raise BadRequest("At least one positive or negative example is required with "
                             f"the {strategy} strategy")
        return ExampleQuery(strategy, pos, neg), excluded
    target = None
    if kind == "discover":
        if not isinstance(raw, dict) or "target" not in raw:
            raise BadRequest("`discover` needs a `target` and `context` pairs")
        target = one(raw["target"])
        raw = raw.get("context")
    pairs = [] if raw is None else raw if isinstance(raw, list) else [raw]
    if not all(isinstance(p, dict) and "positive" in p and "negative" in p for p in pairs):
        raise BadRequest("context pairs must be objects with `positive` and `negative`")
    if kind == "context" and not pairs:
        raise BadRequest("`context` needs at least one pair of examples")
    pos = stack([p["positive"] for p in pairs])
    neg = stack([p["negative"] for p in pairs])
    return ExampleQuery(kind, pos, neg, target), excluded


def _lookup_from(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("collection"), str):
        raise BadRequest("`lookup_from` needs a `collection` name")
    if raw.get("vector") is not None and not isinstance(raw["vector"], str):
        raise BadRequest("`lookup_from.vector` must be a vector name")
    return raw


def _mmr(raw: Any) -> Mmr | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRequest("`mmr` must be an object")
    div = raw.get("diversity")
    if div is not None and (isinstance(div, bool) or not isinstance(div, int | float)
                            or not 0 <= div <= 1):
        raise BadRequest(f"mmr.diversity value {div} is invalid. Must be between 0 and 1.")
    cand = raw.get("candidates_limit")
    if cand is not None and (isinstance(cand, bool) or not isinstance(cand, int)
                             or not 0 <= cand <= 16384):
        raise BadRequest(
            f"mmr.candidates_limit value {cand} is invalid. Must be between 0 and 16384.")
    return Mmr(0.5 if div is None else float(div), cand or None)


def _fusion(kind: str, q: dict[str, Any]) -> Fusion:
    if kind == "fusion":
        if q["fusion"] not in ("rrf", "dbsf"):
            raise BadRequest(f"unknown fusion `{q['fusion']}`: expected rrf or dbsf")
        return Fusion(q["fusion"])
    rrf = q["rrf"]
    if not isinstance(rrf, dict):
        raise BadRequest("`rrf` must be an object with optional `k` and `weights`")
    k = rrf.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise BadRequest(f"rrf k value {k} is invalid. Must be 1 or larger.")
    w = rrf.get("weights")
    if w is not None and (not isinstance(w, list) or any(
            isinstance(x, bool) or not isinstance(x, int | float) for x in w)):
        raise BadRequest("`rrf.weights` must be a list of numbers")
    return Fusion("rrf", k if k is not None else DEFAULT_RRF_K,
                  tuple(float(x) for x in w) if w is not None else None)


def _node(coll: Any, b: dict[str, Any], parent_filter: Any, depth: int, lookup: Lookup | None,
          root: bool) -> QueryRequest:
    """One query plan node: a QueryRequest body (root) or a Prefetch."""
    if depth > MAX_PREFETCH_DEPTH:
        raise BadRequest(f"prefetch nesting is too deep: at most {MAX_PREFETCH_DEPTH} levels "
                         "are supported")
    raw_pf = b.get("prefetch")
    prefetches = [] if raw_pf is None else raw_pf if isinstance(raw_pf, list) else [raw_pf]
    if not all(isinstance(p, dict) for p in prefetches):
        raise BadRequest("`prefetch` must be an object or a list of objects")
    kind, q = _query_kind(b.get("query"))
    using = b.get("using")
    if using is not None and not isinstance(using, str):
        raise BadRequest("`using` must be a vector name")
    lookup_from = _lookup_from(b.get("lookup_from"))
    vec: Any = None
    excluded: list[PointId] = []
    mmr = None
    if kind == "nearest":  # the vector first, then the rest: the order Qdrant reports in
        mmr = _mmr(q.get("mmr"))
        vec, exclude = _vector(coll, q["nearest"], using, lookup_from, lookup)
        excluded = [exclude] if exclude is not None else []
    elif kind in EXAMPLE_KINDS:  # recommend / discover / context: a vector or custom scores
        vec, excluded = _example_query(coll, kind, q[kind], using, lookup_from, lookup)
        kind = "nearest"
    hnsw_ef, exact, name = None, False, ""
    if kind == "nearest":  # params steer a vector search only (elsewhere they are ignored)
        hnsw_ef, exact = common.search_params(b.get("params"))
        name = coll.config.search_name(using)
        if mmr is not None and coll.config.is_sparse(name):
            raise BadRequest("`mmr` over a sparse vector is not supported by Quiver yet")
        if mmr is not None and coll.config.is_multi(name):
            raise BadRequest("`mmr` over a multivector is not supported by Quiver yet")
    own_filter = b.get("filter")
    own_pred = parse_filter(own_filter)  # reports a malformed filter as such before merging
    flt = merge_filters(parent_filter, own_filter)
    lim = common.limit(b.get("limit"))
    off = common.offset(b.get("offset")) if root else 0
    threshold = common.score_threshold(b.get("score_threshold"))
    if prefetches and kind == "none":
        raise BadRequest("A query is needed to merge the prefetches.")
    if threshold is not None and kind in ("none", "order_by"):
        raise BadRequest("A query is needed to use the score_threshold." if kind == "none"
                         else "Can't use score_threshold with an order_by query.")
    if kind in ("fusion", "rrf") and using is not None:
        raise BadRequest("Fusion queries cannot be combined with the 'using' field.")
    wp, wv = common.selectors(b, payload_default=False) if root else (False, False)
    simple = root and not prefetches  # today's path: the point is dropped from the results
    if excluded and not simple:  # as the server: excluded by filter, propagated
        flt = merge_filters(flt, {"must_not": [{"has_id": excluded}]})
    # the request's own filter, unmerged: parsed once (a filter's parse is most of a
    # selective filtered query's Python, bench --only filtered)
    pred = own_pred if flt is own_filter else parse_filter(flt)
    key = orjson.dumps(flt).decode() if flt is not None else ""
    children = [_node(coll, p, flt, depth + 1, lookup, False) for p in prefetches]
    if kind in ("fusion", "rrf", "formula") and not children:
        raise BadRequest(f"`{kind}` query needs `prefetch`: it combines the prefetches' results")
    node = QueryRequest(None, pred, lim, off, wp, wv, children, threshold, key)
    if kind == "nearest":
        assert vec is not None
        node.nearest = SearchSpec(
            vector=vec, using=name, pred=pred, limit=lim, offset=off, score_threshold=threshold,
            with_payload=wp, with_vector=wv,
            exclude_ids=tuple(excluded) if simple else (),
            filter_key=key, hnsw_ef=hnsw_ef, exact=exact,
            quantization=common.quantization_params(b.get("params")))
        node.mmr = mmr
    elif kind in ("fusion", "rrf"):
        node.fusion = _fusion(kind, q)
    elif kind == "formula":
        node.formula = parse_formula(q["formula"], q.get("defaults"))
    elif kind == "order_by":
        node.order_by = order_by(q["order_by"])
    elif kind == "sample":
        if q["sample"] != "random":
            raise BadRequest(f"unknown sample `{q['sample']}`: expected random")
        node.sample = True
    return node


def query_request(coll: Collection, b: dict[str, Any], lookup: Lookup | None = None
                  ) -> QueryRequest:
    """One QueryRequest body (POST /points/query, or one of /points/query/batch) as a query
    plan. `lookup` finds the collections `lookup_from` names."""
    q = b.get("query")
    if type(q) is list and _PLAIN_KEYS.issuperset(b):
        return _plain_query(coll, b, q)
    return _node(coll, b, None, 0, lookup, True)


# what a plain vector query may carry besides `query`: `_plain_query` builds what `_node`
# would for it, without _node's ~15 lookups for prefetch, filters, lookup_from, mmr, params
# (a third of a small query's parse, cProfile, bench/overhead.py)
_PLAIN_KEYS = frozenset({"query", "limit", "offset", "using", "score_threshold",
                         "with_payload", "with_vector", "with_vectors"})


def _plain_query(coll: Any, b: dict[str, Any], raw: list[Any]) -> QueryRequest:
    """A root query whose `query` is a vector given as a list: `_node`'s checks in its order
    (the vector, then limit, offset, threshold), its QueryRequest."""
    using = b.get("using")
    if using is not None and not isinstance(using, str):
        raise BadRequest("`using` must be a vector name")
    vec: Any = vectors.parse_query_vector(raw, using, coll.config)
    name = coll.config.search_name(using)
    lim = common.limit(b.get("limit"))
    off = common.offset(b.get("offset"))
    threshold = common.score_threshold(b.get("score_threshold"))
    wp, wv = common.selectors(b, payload_default=False)
    node = QueryRequest(None, None, lim, off, wp, wv, [], threshold, "")
    node.nearest = SearchSpec(vector=vec, using=name, pred=None, limit=lim, offset=off,
                              score_threshold=threshold, with_payload=wp, with_vector=wv)
    return node


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
            raise BadInput("a sparse search vector needs a name: {\"name\": ..., \"vector\": "
                           "{\"indices\": [...], \"values\": [...]}}")
    return _spec(coll, b, vectors.parse_query_vector(v, using, coll.config), using)


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
