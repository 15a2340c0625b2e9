"""Facet counts: POST /collections/{c}/facet."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint
from api.parse import strict
from api.parse.common import collection
from api.parse.facet import facet_request
from engine import facet as engine_facet


def facet(request: Request, body: Any) -> dict[str, Any]:
    b = body_dict(body)
    req = facet_request(b)
    coll = collection(request)
    strict.check(request, coll, b, 10)
    return {"hits": engine_facet.facet(coll.view(), req)}


routes = [Route("/collections/{collection_name}/facet", endpoint(facet), methods=["POST"])]
