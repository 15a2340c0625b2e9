"""Distance matrix: /points/search/matrix/pairs and /points/search/matrix/offsets."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint
from api.parse import strict
from api.parse.common import collection
from api.parse.matrix import matrix_request
from engine.matrix import Matrix, distance_matrix


def _matrix(request: Request, body: Any) -> Matrix:
    b = body_dict(body)
    req = matrix_request(b)
    coll = collection(request)
    strict.check(request, coll, b, 3)
    return distance_matrix(coll.view(), req)


def pairs(request: Request, body: Any) -> dict[str, Any]:
    return _matrix(request, body).pairs()


def offsets(request: Request, body: Any) -> dict[str, Any]:
    return _matrix(request, body).offsets()


P = "/collections/{collection_name}/points/search/matrix"
routes = [
    Route(P + "/pairs", endpoint(pairs), methods=["POST"]),
    Route(P + "/offsets", endpoint(offsets), methods=["POST"]),
]
