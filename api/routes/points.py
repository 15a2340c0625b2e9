"""Point writes, retrieval, scroll and count."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint, flag
from engine import query
from engine.collection import Collection
from engine.errors import BadRequest


def _coll(request: Request) -> Collection:
    return request.app.state.catalog.get(request.path_params["collection_name"])


def _result(request: Request, seq: int) -> dict[str, Any]:
    return {"operation_id": seq, "status": "completed" if flag(request, "wait") else "acknowledged"}


def upsert(request: Request, body: Any) -> dict[str, Any]:
    return _result(request, _coll(request).upsert(body_dict(body)))


def delete(request: Request, body: Any) -> dict[str, Any]:
    return _result(request, _coll(request).delete_points(body_dict(body)))


def _payload_op(kind: str):
    def run(request: Request, body: Any) -> dict[str, Any]:
        return _result(request, _coll(request).payload_write(kind, body_dict(body)))
    return run


def update_vectors(request: Request, body: Any) -> dict[str, Any]:
    return _result(request, _coll(request).update_vectors(body_dict(body)))


def delete_vectors(request: Request, body: Any) -> dict[str, Any]:
    return _result(request, _coll(request).delete_vectors(body_dict(body)))


BATCH_OPS = {
    "upsert": lambda c, b: c.upsert(b),
    "delete": lambda c, b: c.delete_points(b),
    "set_payload": lambda c, b: c.payload_write("set_payload", b),
    "overwrite_payload": lambda c, b: c.payload_write("overwrite_payload", b),
    "delete_payload": lambda c, b: c.payload_write("delete_payload", b),
    "clear_payload": lambda c, b: c.payload_write("clear_payload", b),
    "update_vectors": lambda c, b: c.update_vectors(b),
    "delete_vectors": lambda c, b: c.delete_vectors(b),
}


def batch_update(request: Request, body: Any) -> list[dict[str, Any]]:
    ops = body_dict(body).get("operations")
    if not isinstance(ops, list):
        raise BadRequest("`operations` must be a list")
    for op in ops:  # validate the shape of every operation before applying any
        if not isinstance(op, dict) or len(op) != 1 or next(iter(op)) not in BATCH_OPS:
            raise BadRequest(f"invalid batch operation: {op!r}")
    coll = _coll(request)
    out = []
    for op in ops:
        (kind, args), = op.items()
        if kind == "clear_payload" and isinstance(args, dict) and "points" not in args \
                and "filter" not in args:
            args = {"points": args}
        out.append(_result(request, BATCH_OPS[kind](coll, body_dict(args))))
    return out


def get_point(request: Request, body: Any) -> dict[str, Any]:
    return query.get_point(_coll(request), _parse_path_id(request.path_params["id"]))


def _parse_path_id(raw: str) -> Any:
    # ASCII digits only: str.isdigit() also accepts "¹" or "１", which int() rejects or reads
    return int(raw) if raw.isascii() and raw.isdigit() else raw


def retrieve(request: Request, body: Any) -> list[dict[str, Any]]:
    b = body_dict(body)
    ids = b.get("ids")
    if not isinstance(ids, list):
        raise BadRequest("`ids` must be a list")
    wp = b.get("with_payload")
    wv = b.get("with_vector", b.get("with_vectors"))
    return query.retrieve(_coll(request), ids, True if wp is None else wp,
                          False if wv is None else wv)


def scroll(request: Request, body: Any) -> dict[str, Any]:
    b = body_dict(body)
    wp = b.get("with_payload")
    wv = b.get("with_vector", b.get("with_vectors"))
    points, nxt = query.scroll(_coll(request), b.get("filter"), query.parse_limit(b.get("limit")),
                               b.get("offset"), True if wp is None else wp,
                               False if wv is None else wv, b.get("order_by"))
    return {"points": points, "next_page_offset": nxt}


def count(request: Request, body: Any) -> dict[str, int]:
    return {"count": query.count(_coll(request), body_dict(body).get("filter"))}


P = "/collections/{collection_name}/points"
routes = [
    Route(P, endpoint(upsert), methods=["PUT"]),
    Route(P, endpoint(retrieve), methods=["POST"]),
    Route(P + "/delete", endpoint(delete), methods=["POST"]),
    Route(P + "/payload", endpoint(_payload_op("set_payload")), methods=["POST"]),
    Route(P + "/payload", endpoint(_payload_op("overwrite_payload")), methods=["PUT"]),
    Route(P + "/payload/delete", endpoint(_payload_op("delete_payload")), methods=["POST"]),
    Route(P + "/payload/clear", endpoint(_payload_op("clear_payload")), methods=["POST"]),
    Route(P + "/vectors", endpoint(update_vectors), methods=["PUT"]),
    Route(P + "/vectors/delete", endpoint(delete_vectors), methods=["POST"]),
    Route(P + "/batch", endpoint(batch_update), methods=["POST"]),
    Route(P + "/scroll", endpoint(scroll), methods=["POST"]),
    Route(P + "/count", endpoint(count), methods=["POST"]),
]
# GET /points/{id} is registered after the fixed sub-paths so they win.
tail_routes = [Route(P + "/{id}", endpoint(get_point, read_body=False), methods=["GET"])]
