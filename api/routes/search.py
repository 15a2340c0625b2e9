"""Search: the universal query API and the legacy search endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint
from api.parse import reads, strict
from api.parse.common import collection, lookup
from engine import query


def _lookup(request: Request) -> Callable[[str], Any]:
    """`lookup(request)`, resolved when a body names another collection (`lookup_from`):
    most queries never do, and reading the request's state costs more than the call."""
    return lambda name: lookup(request)(name)


def query_points(request: Request, body: Any) -> dict[str, Any]:
    coll = collection(request)
    b = body_dict(body)
    req = reads.query_request(coll, b, _lookup(request))
    strict.check(request, coll, b, 10)
    return {"points": query.query_points(coll, [req])[0]}


def query_batch(request: Request, body: Any) -> list[dict[str, Any]]:
    items = reads.searches(body_dict(body))
    coll = collection(request)
    by_name = _lookup(request)
    reqs = [reads.query_request(coll, body_dict(b), by_name) for b in items]
    for b in items:
        strict.check(request, coll, b, 10, batch=len(items))
    return [{"points": r} for r in query.query_points(coll, reqs)]


def search(request: Request, body: Any) -> list[dict[str, Any]]:
    coll = collection(request)
    b = body_dict(body)
    req = reads.search_request(coll, b)
    strict.check(request, coll, b, 10)
    return query.search(coll, [req])[0]


def search_batch(request: Request, body: Any) -> list[list[dict[str, Any]]]:
    coll = collection(request)
    items = reads.searches(body_dict(body))
    reqs = [reads.search_request(coll, body_dict(s)) for s in items]
    for s in items:
        strict.check(request, coll, s, 10, batch=len(items))
    return query.search(coll, reqs)


P = "/collections/{collection_name}/points"
routes = [
    # reads: on the event loop while they stay cheap (api/http.py INLINE_BUDGET_S)
    Route(P + "/query", endpoint(query_points, inline=True), methods=["POST"]),
    Route(P + "/query/batch", endpoint(query_batch, inline=True), methods=["POST"]),
    Route(P + "/search", endpoint(search, inline=True), methods=["POST"]),
    Route(P + "/search/batch", endpoint(search_batch, inline=True), methods=["POST"]),
]
