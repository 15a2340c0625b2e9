"""Grouped search: /points/query/groups, /points/search/groups, /points/recommend/groups.

The legacy bodies become query bodies (api/parse/groups.py, api/parse/legacy.py); all three
run engine/groups.py and answer Qdrant's GroupsResult: {"groups": [...]}.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint
from api.parse import groups as parse_groups
from api.parse import legacy, strict
from api.parse.common import collection, lookup
from engine import groups as engine_groups


def _run(request: Request, body: dict[str, Any], legacy: bool) -> dict[str, Any]:
    coll = collection(request)
    req = parse_groups.groups_request(coll, body, lookup(request), legacy)
    strict.check(request, coll, body, 10)
    return {"groups": engine_groups.query_groups(coll, req)}


def query_groups(request: Request, body: Any) -> dict[str, Any]:
    return _run(request, body_dict(body), False)


def search_groups(request: Request, body: Any) -> dict[str, Any]:
    return _run(request, parse_groups.search_as_query(body_dict(body)), True)


def recommend_groups(request: Request, body: Any) -> dict[str, Any]:
    return _run(request, legacy.recommend_as_query(body_dict(body)), True)


P = "/collections/{collection_name}/points"
routes = [
    Route(P + "/query/groups", endpoint(query_groups), methods=["POST"]),
    Route(P + "/search/groups", endpoint(search_groups), methods=["POST"]),
    Route(P + "/recommend/groups", endpoint(recommend_groups), methods=["POST"]),
]
