"""The legacy recommend and discover endpoints (/points/recommend[/batch], /points/discover[/batch]).

Each body is turned into a universal query body (api/parse/legacy.py) and answered by the
query path; the answer is Qdrant's legacy one: a list of ScoredPoint (batch: one per search).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint
from api.parse import legacy, reads, strict
from api.parse.common import collection, lookup
from engine import query
from engine.errors import BadRequest

Convert = Callable[[dict[str, Any]], dict[str, Any]]


def _run(request: Request, bodies: list[Any], convert: Convert) -> list[list[dict[str, Any]]]:
    coll = collection(request)
    by_name = lookup(request)
    reqs = []
    for raw in bodies:
        b = body_dict(raw)
        if b.get("limit") is None:  # required in Qdrant's legacy bodies
            raise BadRequest("Json deserialize error: missing field `limit`")
        reqs.append(reads.query_request(coll, convert(b), by_name))
        strict.check(request, coll, b, None, batch=len(bodies) if len(bodies) > 1 else None)
    return query.query_points(coll, reqs)


def recommend(request: Request, body: Any) -> list[dict[str, Any]]:
    return _run(request, [body], legacy.recommend_as_query)[0]


def recommend_batch(request: Request, body: Any) -> list[list[dict[str, Any]]]:
    return _run(request, reads.searches(body_dict(body)), legacy.recommend_as_query)


def discover(request: Request, body: Any) -> list[dict[str, Any]]:
    return _run(request, [body], legacy.discover_as_query)[0]


def discover_batch(request: Request, body: Any) -> list[list[dict[str, Any]]]:
    return _run(request, reads.searches(body_dict(body)), legacy.discover_as_query)


P = "/collections/{collection_name}/points"
routes = [
    Route(P + "/recommend", endpoint(recommend), methods=["POST"]),
    Route(P + "/recommend/batch", endpoint(recommend_batch), methods=["POST"]),
    Route(P + "/discover", endpoint(discover), methods=["POST"]),
    Route(P + "/discover/batch", endpoint(discover_batch), methods=["POST"]),
]
