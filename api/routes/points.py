"""Point writes, retrieval, scroll and count."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from api.http import body_dict, endpoint
from api.parse import reads, strict, writes
from api.parse.common import collection, path_point_id, query_flag
from engine import query


def _result(request: Request, seq: int) -> dict[str, Any]:
    return {"operation_id": seq,
            "status": "completed" if query_flag(request, "wait") else "acknowledged"}


def _write(kind: str):
    """The endpoint of one point write (a writes.WRITES name)."""
    def run(request: Request, body: Any) -> dict[str, Any]:
        return _result(request, writes.apply_body(collection(request), kind, body_dict(body)))
    return run


def batch_update(request: Request, body: Any) -> list[dict[str, Any]]:
    ops = writes.batch_ops(body_dict(body))
    coll = collection(request)
    return [_result(request, writes.apply_body(coll, kind, body_dict(args)))
            for kind, args in ops]


def get_point(request: Request, body: Any) -> dict[str, Any]:
    return query.get_point(collection(request), path_point_id(request.path_params["id"]))


def retrieve(request: Request, body: Any) -> list[dict[str, Any]]:
    req = reads.retrieve_request(body_dict(body))
    return query.retrieve(collection(request), req)


def scroll(request: Request, body: Any) -> dict[str, Any]:
    b = body_dict(body)
    coll = collection(request)
    req = reads.scroll_request(b)
    strict.check(request, coll, b, 10)
    points, nxt = query.scroll(coll, req)
    return {"points": points, "next_page_offset": nxt}


def count(request: Request, body: Any) -> dict[str, int]:
    coll = collection(request)
    b = body_dict(body)
    req = reads.count_request(b)
    strict.check(request, coll, b, None)
    return {"count": query.count(coll, req)}


P = "/collections/{collection_name}/points"
# reads run on the event loop while they stay cheap (api/http.py INLINE_BUDGET_S)
routes = [
    Route(P, endpoint(_write("upsert")), methods=["PUT"]),
    Route(P, endpoint(retrieve, inline=True), methods=["POST"]),
    Route(P + "/delete", endpoint(_write("delete")), methods=["POST"]),
    Route(P + "/payload", endpoint(_write("set_payload")), methods=["POST"]),
    Route(P + "/payload", endpoint(_write("overwrite_payload")), methods=["PUT"]),
    Route(P + "/payload/delete", endpoint(_write("delete_payload")), methods=["POST"]),
    Route(P + "/payload/clear", endpoint(_write("clear_payload")), methods=["POST"]),
    Route(P + "/vectors", endpoint(_write("update_vectors")), methods=["PUT"]),
    Route(P + "/vectors/delete", endpoint(_write("delete_vectors")), methods=["POST"]),
    Route(P + "/batch", endpoint(batch_update), methods=["POST"]),
    Route(P + "/scroll", endpoint(scroll, inline=True), methods=["POST"]),
    Route(P + "/count", endpoint(count, inline=True), methods=["POST"]),
]
# GET /points/{id} is registered after the fixed sub-paths so they win.
tail_routes = [Route(P + "/{id}", endpoint(get_point, read_body=False, inline=True), methods=["GET"])]
