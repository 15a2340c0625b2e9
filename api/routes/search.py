"""Search: the universal query API and the legacy search endpoints."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint
from engine import query
from engine.collection import Collection
from engine.errors import BadInput, BadRequest
from engine.filters import parse_filter
from engine.ids import parse_id
from engine.points_input import numeric_array


def _coll(request: Request) -> Collection:
    return request.app.state.catalog.get(request.path_params["collection_name"])


def _vector(raw: Any) -> np.ndarray:
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


def _threshold(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRequest("`score_threshold` must be a number")
    return float(v)


def _search_params(params: Any) -> tuple[int | None, bool]:
    """Qdrant's SearchParams: `hnsw_ef` and `exact` steer the index; the rest (quantization,
    indexed_only, acorn) is accepted and has nothing to change here."""
    if params is None:
        return None, False
    if not isinstance(params, dict):
        raise BadRequest("`params` must be an object")
    ef = params.get("hnsw_ef")
    if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or ef < 0):
        raise BadRequest("`params.hnsw_ef` must be a non-negative integer")
    exact = params.get("exact")
    if exact is not None and not isinstance(exact, bool):
        raise BadRequest("`params.exact` must be a boolean")
    return (ef or None), bool(exact)


def _base_spec(coll: Collection, b: dict[str, Any], vector: np.ndarray, using: str | None,
               wp_default: Any, exclude: tuple[Any, ...] = ()) -> query.SearchSpec:
    flt = b.get("filter")
    hnsw_ef, exact = _search_params(b.get("params"))
    return query.SearchSpec(
        vector=vector,
        using=coll.config.vector(using).name,
        pred=parse_filter(flt),
        limit=query.parse_limit(b.get("limit", b.get("top"))),
        offset=query.parse_offset(b.get("offset")),
        score_threshold=_threshold(b.get("score_threshold")),
        with_payload=wp_default if b.get("with_payload") is None else b["with_payload"],
        with_vector=False if b.get("with_vector", b.get("with_vectors")) is None
        else b.get("with_vector", b.get("with_vectors")),
        exclude_ids=exclude,
        hnsw_ef=hnsw_ef,
        exact=exact,
        filter_key=orjson.dumps(flt).decode() if flt is not None else "",
    )


def query_spec(coll: Collection, b: dict[str, Any]) -> query.SearchSpec | None:
    """QueryRequest → SearchSpec; None means "no query": a scroll by id."""
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
    if isinstance(q, int | str) and not isinstance(q, bool):
        pid = parse_id(q)
        vec = query.vector_of_point(coll, pid, using or "")
        return _base_spec(coll, b, vec, using, False, exclude=(pid,))
    return _base_spec(coll, b, _vector(q), using, False)


def _scroll_as_query(coll: Collection, b: dict[str, Any]) -> list[dict[str, Any]]:
    limit = query.parse_limit(b.get("limit"))
    offset = query.parse_offset(b.get("offset"))
    wp = b.get("with_payload")
    wv = b.get("with_vector", b.get("with_vectors"))
    points, _ = query.scroll(coll, b.get("filter"), limit + offset, None,
                             False if wp is None else wp, False if wv is None else wv)
    out = []
    for p in points[offset:]:
        out.append({"id": p["id"], "version": 0, "score": 1.0,
                    **{k: v for k, v in p.items() if k in ("payload", "vector")}})
    return out


def _run_queries(coll: Collection, bodies: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    specs: list[query.SearchSpec | None] = [query_spec(coll, body_dict(b)) for b in bodies]
    real = [s for s in specs if s is not None]
    found = iter(query.search(coll, real)) if real else iter(())
    return [next(found) if s is not None else _scroll_as_query(coll, body_dict(b))
            for s, b in zip(specs, bodies, strict=True)]


def query_points(request: Request, body: Any) -> dict[str, Any]:
    return {"points": _run_queries(_coll(request), [body_dict(body)])[0]}


def query_batch(request: Request, body: Any) -> list[dict[str, Any]]:
    searches = body_dict(body).get("searches")
    if not isinstance(searches, list):
        raise BadRequest("`searches` must be a list")
    return [{"points": r} for r in _run_queries(_coll(request), searches)]


def _legacy_spec(coll: Collection, b: dict[str, Any]) -> query.SearchSpec:
    v = b.get("vector")
    using = None
    if isinstance(v, dict):
        if "name" in v and "vector" in v:
            using, v = v["name"], v["vector"]
        else:
            raise BadInput("Sparse vector search is not supported by Quiver")
    return _base_spec(coll, b, _vector(v), using, False)


def search(request: Request, body: Any) -> list[dict[str, Any]]:
    coll = _coll(request)
    return query.search(coll, [_legacy_spec(coll, body_dict(body))])[0]


def search_batch(request: Request, body: Any) -> list[list[dict[str, Any]]]:
    coll = _coll(request)
    searches = body_dict(body).get("searches")
    if not isinstance(searches, list):
        raise BadRequest("`searches` must be a list")
    return query.search(coll, [_legacy_spec(coll, body_dict(s)) for s in searches])


P = "/collections/{collection_name}/points"
routes = [
    Route(P + "/query", endpoint(query_points), methods=["POST"]),
    Route(P + "/query/batch", endpoint(query_batch), methods=["POST"]),
    Route(P + "/search", endpoint(search), methods=["POST"]),
    Route(P + "/search/batch", endpoint(search_batch), methods=["POST"]),
]
