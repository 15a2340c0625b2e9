"""Collections, aliases and payload indexes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint
from api.parse.common import collection, query_flag
from engine.catalog import Catalog
from engine.errors import BadRequest


def _cat(request: Request) -> Catalog:
    return request.app.state.catalog


def _name(request: Request) -> str:
    return request.path_params["collection_name"]


def list_collections(request: Request, body: Any) -> dict[str, Any]:
    return {"collections": [{"name": n} for n in _cat(request).names()]}


def create_collection(request: Request, body: Any) -> bool:
    if body is None:
        raise BadRequest("Format error in JSON body: EOF while parsing a value")
    _cat(request).create(_name(request), body_dict(body))
    return True


def get_collection(request: Request, body: Any) -> dict[str, Any]:
    return collection(request).info()


def update_collection(request: Request, body: Any) -> bool:
    collection(request).update_config(body_dict(body))
    return True


def delete_collection(request: Request, body: Any) -> bool:
    return _cat(request).delete(_name(request))


def collection_exists(request: Request, body: Any) -> dict[str, bool]:
    return {"exists": _cat(request).exists(_name(request))}


def update_aliases(request: Request, body: Any) -> bool:
    _cat(request).update_aliases(body_dict(body).get("actions"))
    return True


def list_aliases(request: Request, body: Any) -> dict[str, Any]:
    return {"aliases": _cat(request).list_aliases()}


def collection_aliases(request: Request, body: Any) -> dict[str, Any]:
    cat = _cat(request)
    real = cat.resolve(_name(request))
    return {"aliases": cat.list_aliases(real)}


def _update_result(request: Request, seq: int | None = None) -> dict[str, Any]:
    status = "completed" if query_flag(request, "wait") else "acknowledged"
    return {"operation_id": seq if seq is not None else 0, "status": status}


def create_index(request: Request, body: Any) -> dict[str, Any]:
    b = body_dict(body)
    coll = collection(request)
    field: Any = b.get("field_name")  # unchecked JSON: Collection.create_index validates it
    coll.create_index(field, b.get("field_schema") or b.get("field_type"))
    return _update_result(request, coll.wal.last_seq)


def delete_index(request: Request, body: Any) -> dict[str, Any]:
    coll = collection(request)
    coll.delete_index(request.path_params["field_name"])
    return _update_result(request, coll.wal.last_seq)


C = "/collections/{collection_name}"
routes = [
    Route("/collections", endpoint(list_collections, read_body=False), methods=["GET"]),
    Route("/collections/aliases", endpoint(update_aliases), methods=["POST"]),
    Route("/aliases", endpoint(list_aliases, read_body=False), methods=["GET"]),
    Route(C, endpoint(create_collection), methods=["PUT"]),
    Route(C, endpoint(get_collection, read_body=False), methods=["GET"]),
    Route(C, endpoint(update_collection), methods=["PATCH"]),
    Route(C, endpoint(delete_collection, read_body=False), methods=["DELETE"]),
    Route(C + "/exists", endpoint(collection_exists, read_body=False), methods=["GET"]),
    Route(C + "/aliases", endpoint(collection_aliases, read_body=False), methods=["GET"]),
    Route(C + "/index", endpoint(create_index), methods=["PUT"]),
    Route(C + "/index/{field_name:path}", endpoint(delete_index, read_body=False),
          methods=["DELETE"]),
]
