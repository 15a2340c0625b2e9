"""Service `qdrant.Points`: each RPC translated into the REST call it stands for and run
through api.rpc.dispatch.Bridge (the REST route's own handler); results converted back to
Qdrant's messages.

Translation only: a request message becomes the REST body (and the `wait` / `ordering` /
`timeout` / `consistency` query parameters) of its REST twin; what the REST parser refuses,
the RPC refuses with the same message (INVALID_ARGUMENT, NOT_FOUND … by api/rpc/status.py).
A message qdrant-client's converters cannot read (a oneof left empty) is INVALID_ARGUMENT.

Hot paths convert directly (api/rpc/convert.py): an upsert of dense vectors hands the write
parser one numpy array per vector name (its in-process batch form), searches and queries with
a plain dense vector build their body without pydantic, and scored / retrieved points are
written straight into the response messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from qdrant_client.grpc import points_pb2, points_service_pb2_grpc

from api.rpc.convert import (
    GrpcToRest,
    dense_matrix,
    fill_records,
    jsonable,
    payload_json,
    point_id,
    point_ids,
    rest_body,
    set_point_id,
    vector_json,
    vectors_json,
)
from api.rpc.dispatch import Bridge

P = "/collections/{collection_name}/points"
Body = dict[str, Any]
Query = dict[str, str]

_ORDERING = {points_pb2.Weak: "weak", points_pb2.Medium: "medium", points_pb2.Strong: "strong"}
_CONSISTENCY = {points_pb2.All: "all", points_pb2.Majority: "majority",
                points_pb2.Quorum: "quorum"}
_STATUS = {"completed": points_pb2.Completed, "acknowledged": points_pb2.Acknowledged}


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _Probe:
    """A context for a first try (the upsert fast path): a refusal is raised to the caller,
    which then runs the general path, instead of ending the RPC."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def invocation_metadata(self) -> Any:
        return self.context.invocation_metadata()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Refused(code, details)


DELETE_INDEX = "/collections/{collection_name}/index/{field_name:path}"


# ---- request parts -----------------------------------------------------------------------------


def _coll(req: Any) -> dict[str, str]:
    return {"collection_name": req.collection_name}


def _write_query(req: Any) -> Query:
    q: Query = {}
    if req.HasField("wait"):
        q["wait"] = "true" if req.wait else "false"
    if req.HasField("ordering"):
        q["ordering"] = _ORDERING.get(req.ordering.type, "weak")
    if req.HasField("timeout"):
        q["timeout"] = str(req.timeout)
    return q


def _read_query(req: Any) -> Query:
    q: Query = {}
    if req.HasField("timeout"):
        q["timeout"] = str(req.timeout)
    if hasattr(req, "read_consistency") and req.HasField("read_consistency"):
        rc = req.read_consistency
        q["consistency"] = str(rc.factor) if rc.WhichOneof("value") == "factor" \
            else _CONSISTENCY.get(rc.type, "all")
    return q


def filter_json(f: Any) -> Any:
    return rest_body(GrpcToRest.convert_filter(f))


def _put(body: Body, key: str, msg: Any, field: str, conv: Callable[[Any], Any]) -> None:
    """body[key] = conv(msg.field) when the field is set."""
    if msg.HasField(field):
        body[key] = conv(getattr(msg, field))


def _selector(sel: Any) -> Body:
    """A PointsSelector → {"points": ids} or {"filter": ...} (an empty one: {}, which REST
    refuses)."""
    kind = sel.WhichOneof("points_selector_one_of")
    if kind == "points":
        return {"points": point_ids(sel.points.ids)}
    if kind == "filter":
        return {"filter": filter_json(sel.filter)}
    return {}


def _shard_key(body: Body, msg: Any) -> Body:
    """`shard_key` goes to REST as its body carries it (the REST parser decides: ignored)."""
    if msg.HasField("shard_key_selector"):
        body["shard_key"] = jsonable(GrpcToRest.convert_shard_key_selector(
            msg.shard_key_selector))
    return body


def _with_payload(body: Body, msg: Any, field: str = "with_payload") -> None:
    _put(body, "with_payload", msg, field,
         lambda s: jsonable(GrpcToRest.convert_with_payload_selector(s))
         if s.WhichOneof("selector_options") else None)
    if body.get("with_payload", 0) is None:
        del body["with_payload"]


def _with_vector(body: Body, msg: Any, field: str = "with_vectors") -> None:
    _put(body, "with_vector", msg, field,
         lambda s: jsonable(GrpcToRest.convert_with_vectors_selector(s))
         if s.WhichOneof("selector_options") else None)
    if body.get("with_vector", 0) is None:
        del body["with_vector"]


def _params(body: Body, msg: Any) -> None:
    _put(body, "params", msg, "params", lambda p: rest_body(GrpcToRest.convert_search_params(p)))


def _lookup_from(body: Body, msg: Any) -> None:
    _put(body, "lookup_from", msg, "lookup_from",
         lambda x: rest_body(GrpcToRest.convert_lookup_location(x)))


def _with_lookup(body: Body, msg: Any) -> None:
    _put(body, "with_lookup", msg, "with_lookup",
         lambda x: rest_body(GrpcToRest.convert_with_lookup(x)))


def _common_read(body: Body, msg: Any, filter_field: str = "filter") -> Body:
    """The fields most read requests share, where the message has them."""
    fields = msg.DESCRIPTOR.fields_by_name
    if filter_field in fields:
        _put(body, "filter", msg, filter_field, filter_json)
    for key in ("score_threshold", "offset", "using"):
        if key in fields and msg.HasField(key):
            body[key] = getattr(msg, key)
    if "params" in fields:
        _params(body, msg)
    if "lookup_from" in fields:
        _lookup_from(body, msg)
    if "with_lookup" in fields:
        _with_lookup(body, msg)
    _with_payload(body, msg)
    _with_vector(body, msg)
    if "shard_key_selector" in fields:
        _shard_key(body, msg)
    return body


# ---- writes ------------------------------------------------------------------------------------


def _point_json(p: points_pb2.PointStruct) -> Body:
    out: Body = {"id": point_id(p.id), "payload": payload_json(p.payload)}
    if p.HasField("vectors"):
        out["vector"] = vectors_json(p.vectors)
    return out


def _upsert_options(body: Body, msg: Any) -> Body:
    _put(body, "update_filter", msg, "update_filter", filter_json)
    _put(body, "update_mode", msg, "update_mode",
         lambda m: jsonable(GrpcToRest.convert_update_mode(m)))
    return _shard_key(body, msg)


def upsert_body(msg: Any) -> Body:
    """The general form: Qdrant's PointInsertOperations list form."""
    return _upsert_options({"points": [_point_json(p) for p in msg.points]}, msg)


def fast_upsert_body(msg: Any) -> Body | None:
    """Points that all carry the same dense vectors (the default one, or the same names) →
    the batch form with one float32 array per name (`batch.vectors` an ndarray: the write
    parser's in-process form, ids unique; per name: a list of array rows), or None."""
    points = msg.points
    if not points or not all(p.HasField("vectors") for p in points):
        return None
    ids = point_ids(p.id for p in points)
    if any(i is None for i in ids):
        return None
    payloads = [payload_json(p.payload) for p in points]
    kind = points[0].vectors.WhichOneof("vectors_options")
    if kind == "vector":
        if any(p.vectors.WhichOneof("vectors_options") != "vector" for p in points):
            return None
        arr = dense_matrix([p.vectors.vector for p in points])
        if arr is None:
            return None
        if len(set(ids)) == len(ids) and not msg.HasField("update_filter") \
                and not msg.HasField("update_mode"):
            return _shard_key({"batch": {"ids": ids, "vectors": arr, "payloads": payloads}},
                              msg)
        return None
    if kind != "vectors":
        return None
    names = sorted(points[0].vectors.vectors.vectors)
    if not names or any(p.vectors.WhichOneof("vectors_options") != "vectors"
                        or sorted(p.vectors.vectors.vectors) != names for p in points):
        return None
    columns: dict[str, Any] = {}
    for name in names:
        arr = dense_matrix([p.vectors.vectors.vectors[name] for p in points])
        if arr is None:
            return None
        columns[name] = list(arr)
    return _upsert_options({"batch": {"ids": ids, "vectors": columns, "payloads": payloads}},
                           msg)


def _point_vectors_json(p: points_pb2.PointVectors) -> Body:
    out: Body = {"id": point_id(p.id)}
    if p.HasField("vectors"):
        out["vector"] = vectors_json(p.vectors)
    return out


def update_vectors_body(msg: Any) -> Body:
    body: Body = {"points": [_point_vectors_json(p) for p in msg.points]}
    _put(body, "update_filter", msg, "update_filter", filter_json)
    return _shard_key(body, msg)


def delete_vectors_body(msg: Any, selector_field: str = "points_selector") -> Body:
    body = _selector(getattr(msg, selector_field))
    body["vector"] = list(msg.vectors.names)
    return _shard_key(body, msg)


def set_payload_body(msg: Any) -> Body:
    body: Body = _selector(msg.points_selector) if msg.HasField("points_selector") else {}
    body["payload"] = payload_json(msg.payload)
    if msg.HasField("key"):
        body["key"] = msg.key
    return _shard_key(body, msg)


def delete_payload_body(msg: Any) -> Body:
    body: Body = _selector(msg.points_selector) if msg.HasField("points_selector") else {}
    body["keys"] = list(msg.keys)
    return _shard_key(body, msg)


def _selector_body(msg: Any, field: str = "points") -> Body:
    return _shard_key(_selector(getattr(msg, field)), msg)


def batch_body(msg: points_pb2.UpdateBatchPoints) -> Body:
    """UpdateBatchPoints → POST /points/batch {"operations": [...]}, each in REST's form."""
    ops: list[Body] = []
    for op in msg.operations:
        kind = op.WhichOneof("operation")
        val: Any = getattr(op, kind) if kind else None
        if kind == "upsert":
            ops.append({"upsert": upsert_body(val)})
        elif kind == "delete_points":
            ops.append({"delete": _selector_body(val)})
        elif kind == "delete_deprecated":
            ops.append({"delete": _selector(val)})
        elif kind in ("set_payload", "overwrite_payload"):
            ops.append({kind: set_payload_body(val)})
        elif kind == "delete_payload":
            ops.append({"delete_payload": delete_payload_body(val)})
        elif kind == "clear_payload":
            ops.append({"clear_payload": _selector_body(val)})
        elif kind == "clear_payload_deprecated":
            ops.append({"clear_payload": _selector(val)})
        elif kind == "update_vectors":
            ops.append({"update_vectors": update_vectors_body(val)})
        elif kind == "delete_vectors":
            ops.append({"delete_vectors": delete_vectors_body(val)})
        else:
            ops.append({"unknown": None})  # REST: "invalid batch operation"
    return {"operations": ops}


def index_body(msg: points_pb2.CreateFieldIndexCollection) -> Body:
    from qdrant_client.conversions.conversion import (  # noqa: PLC0415 - one use
        grpc_field_type_to_payload_schema,
    )
    body: Body = {"field_name": msg.field_name}
    if msg.HasField("field_index_params"):
        body["field_schema"] = jsonable(
            GrpcToRest.convert_payload_schema_params(msg.field_index_params))
    elif msg.HasField("field_type"):
        body["field_schema"] = jsonable(GrpcToRest.convert_payload_schema_type(
            grpc_field_type_to_payload_schema(msg.field_type)))  # type: ignore[arg-type]
    return body


# ---- reads -------------------------------------------------------------------------------------


def get_body(msg: points_pb2.GetPoints) -> Body:
    return _common_read({"ids": point_ids(msg.ids)}, msg)


def search_body(msg: Any) -> Body:
    """SearchPoints / SearchPointGroups → the legacy search body: `vector` a list, or
    {name, vector} with a name (the vector sparse when `sparse_indices` is set)."""
    vec: Any = msg.vector[:]
    if msg.HasField("sparse_indices"):
        vec = {"indices": msg.sparse_indices.data[:], "values": vec}
    if msg.HasField("vector_name"):
        vec = {"name": msg.vector_name, "vector": vec}
    body: Body = {"vector": vec, "limit": msg.limit}
    if isinstance(msg, points_pb2.SearchPointGroups):
        body["group_by"] = msg.group_by
        body["group_size"] = msg.group_size
    return _common_read(body, msg)


def _example(ex: Any) -> Any:
    """A VectorExample → a point id or a vector (an empty one: None, which REST refuses)."""
    kind = ex.WhichOneof("example")
    return point_id(ex.id) if kind == "id" else vector_json(ex.vector) if kind else None


def recommend_body(msg: Any) -> Body:
    body: Body = {"positive": [*point_ids(msg.positive),
                               *(vector_json(v) for v in msg.positive_vectors)],
                  "negative": [*point_ids(msg.negative),
                               *(vector_json(v) for v in msg.negative_vectors)],
                  "limit": msg.limit}
    _put(body, "strategy", msg, "strategy",
         lambda s: jsonable(GrpcToRest.convert_recommend_strategy(s)))
    if isinstance(msg, points_pb2.RecommendPointGroups):
        body["group_by"] = msg.group_by
        body["group_size"] = msg.group_size
    return _common_read(body, msg)


def discover_body(msg: points_pb2.DiscoverPoints) -> Body:
    body: Body = {"limit": msg.limit,
                  "context": [{"positive": _example(p.positive),
                               "negative": _example(p.negative)} for p in msg.context]}
    if msg.HasField("target") and msg.target.WhichOneof("target") == "single":
        body["target"] = _example(msg.target.single)
    return _common_read(body, msg)


def scroll_body(msg: points_pb2.ScrollPoints) -> Body:
    body: Body = {}
    _put(body, "offset", msg, "offset", point_id)
    _put(body, "limit", msg, "limit", int)
    _put(body, "order_by", msg, "order_by", lambda o: rest_body(GrpcToRest.convert_order_by(o)))
    _put(body, "filter", msg, "filter", filter_json)
    _with_payload(body, msg)
    _with_vector(body, msg)
    return _shard_key(body, msg)


def count_body(msg: points_pb2.CountPoints) -> Body:
    body: Body = {}
    _put(body, "filter", msg, "filter", filter_json)
    _put(body, "exact", msg, "exact", bool)
    return _shard_key(body, msg)


def _query_vector(q: Any) -> Any:
    """A Query → its REST JSON; a plain dense `nearest` directly, the rest through
    qdrant-client's converter."""
    if q.WhichOneof("variant") == "nearest" and q.nearest.WhichOneof("variant") == "dense":
        return q.nearest.dense.data[:]
    return jsonable(GrpcToRest.convert_query(q))


def query_body(msg: Any) -> Body:
    """QueryPoints / QueryPointGroups → the universal query body."""
    body: Body = {}
    if msg.prefetch:
        body["prefetch"] = [rest_body(GrpcToRest.convert_prefetch_query(p))
                            for p in msg.prefetch]
    _put(body, "query", msg, "query", _query_vector)
    _put(body, "limit", msg, "limit", int)
    if isinstance(msg, points_pb2.QueryPointGroups):
        body["group_by"] = msg.group_by
        _put(body, "group_size", msg, "group_size", int)
    return _common_read(body, msg)


def facet_body(msg: points_pb2.FacetCounts) -> Body:
    body: Body = {"key": msg.key}
    _put(body, "filter", msg, "filter", filter_json)
    _put(body, "limit", msg, "limit", int)
    _put(body, "exact", msg, "exact", bool)
    return _shard_key(body, msg)


def matrix_body(msg: points_pb2.SearchMatrixPoints) -> Body:
    body: Body = {}
    _put(body, "filter", msg, "filter", filter_json)
    for key in ("sample", "limit", "using"):
        if msg.HasField(key):
            body[key] = getattr(msg, key)
    return _shard_key(body, msg)


# ---- results -----------------------------------------------------------------------------------


def _update_result(out: points_pb2.UpdateResult, res: dict[str, Any]) -> None:
    if res.get("operation_id") is not None:
        out.operation_id = res["operation_id"]
    out.status = _STATUS.get(res.get("status", ""), points_pb2.UnknownUpdateStatus)


def _fill_groups(out: points_pb2.GroupsResult, groups: list[dict[str, Any]]) -> None:
    for g in groups:
        pg = out.groups.add()
        gid = g["id"]
        if isinstance(gid, bool) or not isinstance(gid, int):
            pg.id.string_value = str(gid)
        elif gid >= 0:
            pg.id.unsigned_value = gid
        else:
            pg.id.integer_value = gid
        fill_records(pg.hits, g.get("hits") or [])
        if g.get("lookup") is not None:
            holder = points_pb2.GetResponse()
            fill_records(holder.result, [g["lookup"]], scored=False)
            pg.lookup.CopyFrom(holder.result[0])


def _fill_batches(out: Any, batches: list[list[dict[str, Any]]]) -> None:
    for hits in batches:
        fill_records(out.add().result, hits)


def _facet_hits(out: Any, hits: list[dict[str, Any]]) -> None:
    for h in hits:
        fh = out.add()
        v = h["value"]
        if isinstance(v, bool):
            fh.value.bool_value = v
        elif isinstance(v, int):
            fh.value.integer_value = v
        else:
            fh.value.string_value = str(v)
        fh.count = h["count"]


class PointsService(points_service_pb2_grpc.PointsServicer):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    # ---- plumbing --------------------------------------------------------------------------

    async def _call(self, context: Any, rpc: str, method: str, template: str, msg: Any,
                    build: Callable[[Any], Body] | None, query: Query,
                    extra: dict[str, str] | None = None) -> Any:
        body = await self.bridge.body(context, build, msg) if build is not None else None
        params = _coll(msg)
        if extra:
            params.update(extra)
        return await self.bridge.call(context, rpc, method, template, params, query, body)

    async def _write(self, context: Any, rpc: str, method: str, template: str, msg: Any,
                     build: Callable[[Any], Body] | None,
                     extra: dict[str, str] | None = None) -> points_pb2.PointsOperationResponse:
        started = time.perf_counter()
        res = await self._call(context, rpc, method, template, msg, build, _write_query(msg),
                               extra)
        out = points_pb2.PointsOperationResponse()
        _update_result(out.result, res)
        out.time = time.perf_counter() - started
        return out

    # ---- writes ----------------------------------------------------------------------------

    async def Upsert(self, request: points_pb2.UpsertPoints,  # noqa: N802
                     context: Any) -> points_pb2.PointsOperationResponse:
        started = time.perf_counter()
        query = _write_query(request)
        fast = await self.bridge.body(context, fast_upsert_body, request)
        res: Any = None
        if fast:
            try:  # a refusal on the fast form: the general form gives REST's own message
                res = await self.bridge.call(_Probe(context), "Upsert", "PUT", P,
                                             _coll(request), query, fast, observe=False)
                self.bridge.observe("Upsert", grpc.StatusCode.OK, started)
            except _Refused as exc:
                if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                    self.bridge.observe("Upsert", exc.code, started)
                    await context.abort(exc.code, exc.details)
        if res is None:
            res = await self._call(context, "Upsert", "PUT", P, request, upsert_body, query)
        out = points_pb2.PointsOperationResponse()
        _update_result(out.result, res)
        out.time = time.perf_counter() - started
        return out

    async def Delete(self, request: points_pb2.DeletePoints,  # noqa: N802
                     context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "Delete", "POST", P + "/delete", request,
                                 _selector_body)

    async def UpdateVectors(self, request: points_pb2.UpdatePointVectors,  # noqa: N802
                            context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "UpdateVectors", "PUT", P + "/vectors", request,
                                 update_vectors_body)

    async def DeleteVectors(self, request: points_pb2.DeletePointVectors,  # noqa: N802
                            context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "DeleteVectors", "POST", P + "/vectors/delete",
                                 request, delete_vectors_body)

    async def SetPayload(self, request: points_pb2.SetPayloadPoints,  # noqa: N802
                         context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "SetPayload", "POST", P + "/payload", request,
                                 set_payload_body)

    async def OverwritePayload(self, request: points_pb2.SetPayloadPoints,  # noqa: N802
                               context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "OverwritePayload", "PUT", P + "/payload", request,
                                 set_payload_body)

    async def DeletePayload(self, request: points_pb2.DeletePayloadPoints,  # noqa: N802
                            context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "DeletePayload", "POST", P + "/payload/delete",
                                 request, delete_payload_body)

    async def ClearPayload(self, request: points_pb2.ClearPayloadPoints,  # noqa: N802
                           context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "ClearPayload", "POST", P + "/payload/clear",
                                 request, _selector_body)

    async def CreateFieldIndex(self, request: points_pb2.CreateFieldIndexCollection,  # noqa: N802
                               context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "CreateFieldIndex", "PUT",
                                 "/collections/{collection_name}/index", request, index_body)

    async def DeleteFieldIndex(self, request: points_pb2.DeleteFieldIndexCollection,  # noqa: N802
                               context: Any) -> points_pb2.PointsOperationResponse:
        return await self._write(context, "DeleteFieldIndex", "DELETE", DELETE_INDEX, request,
                                 None, {"field_name": request.field_name})

    async def CreateVectorName(self, request: points_pb2.CreateVectorNameRequest,  # noqa: N802
                               context: Any) -> points_pb2.PointsOperationResponse:
        await self.bridge.unserved(context, "CreateVectorName", "PUT",
                                   "/collections/{collection_name}/vectors/{vector_name}",
                                   {**_coll(request), "vector_name": request.vector_name})

    async def DeleteVectorName(self, request: points_pb2.DeleteVectorNameRequest,  # noqa: N802
                               context: Any) -> points_pb2.PointsOperationResponse:
        await self.bridge.unserved(context, "DeleteVectorName", "DELETE",
                                   "/collections/{collection_name}/vectors/{vector_name}",
                                   {**_coll(request), "vector_name": request.vector_name})

    async def UpdateBatch(self, request: points_pb2.UpdateBatchPoints,  # noqa: N802
                          context: Any) -> points_pb2.UpdateBatchResponse:
        started = time.perf_counter()
        res = await self._call(context, "UpdateBatch", "POST", P + "/batch", request,
                               batch_body, _write_query(request))
        out = points_pb2.UpdateBatchResponse()
        for r in res:
            _update_result(out.result.add(), r)
        out.time = time.perf_counter() - started
        return out

    # ---- reads -----------------------------------------------------------------------------

    async def Get(self, request: points_pb2.GetPoints,  # noqa: N802
                  context: Any) -> points_pb2.GetResponse:
        started = time.perf_counter()
        res = await self._call(context, "Get", "POST", P, request, get_body,
                               _read_query(request))
        out = points_pb2.GetResponse()
        fill_records(out.result, res, scored=False)
        out.time = time.perf_counter() - started
        return out

    async def Scroll(self, request: points_pb2.ScrollPoints,  # noqa: N802
                     context: Any) -> points_pb2.ScrollResponse:
        started = time.perf_counter()
        res = await self._call(context, "Scroll", "POST", P + "/scroll", request, scroll_body,
                               _read_query(request))
        out = points_pb2.ScrollResponse()
        fill_records(out.result, res["points"], scored=False)
        if res.get("next_page_offset") is not None:
            set_point_id(out.next_page_offset, res["next_page_offset"])
        out.time = time.perf_counter() - started
        return out

    async def Count(self, request: points_pb2.CountPoints,  # noqa: N802
                    context: Any) -> points_pb2.CountResponse:
        started = time.perf_counter()
        res = await self._call(context, "Count", "POST", P + "/count", request, count_body,
                               _read_query(request))
        out = points_pb2.CountResponse()
        out.result.count = res["count"]
        out.time = time.perf_counter() - started
        return out

    async def _scored(self, context: Any, rpc: str, template: str, msg: Any,
                      build: Callable[[Any], Body], out: Any) -> Any:
        """An RPC answered by one list of scored points (REST: a list, or {"points": …})."""
        started = time.perf_counter()
        res = await self._call(context, rpc, "POST", template, msg, build, _read_query(msg))
        fill_records(out.result, res["points"] if isinstance(res, dict) else res)
        out.time = time.perf_counter() - started
        return out

    async def _batch(self, context: Any, rpc: str, template: str, msg: Any, items: Any,
                     build: Callable[[Any], Body], out: Any) -> Any:
        """A batch RPC: each item's body under `searches`, one BatchResult per item."""
        started = time.perf_counter()

        def body(_: Any) -> Body:
            return {"searches": [build(m) for m in items]}

        res = await self._call(context, rpc, "POST", template, msg, body, _read_query(msg))
        _fill_batches(out.result, [r["points"] if isinstance(r, dict) else r for r in res])
        out.time = time.perf_counter() - started
        return out

    async def _groups(self, context: Any, rpc: str, template: str, msg: Any,
                      build: Callable[[Any], Body], out: Any) -> Any:
        started = time.perf_counter()
        res = await self._call(context, rpc, "POST", template, msg, build, _read_query(msg))
        _fill_groups(out.result, res["groups"])
        out.result.SetInParent()
        out.time = time.perf_counter() - started
        return out

    async def Search(self, request: points_pb2.SearchPoints,  # noqa: N802
                     context: Any) -> points_pb2.SearchResponse:
        return await self._scored(context, "Search", P + "/search", request, search_body,
                                  points_pb2.SearchResponse())

    async def SearchBatch(self, request: points_pb2.SearchBatchPoints,  # noqa: N802
                          context: Any) -> points_pb2.SearchBatchResponse:
        return await self._batch(context, "SearchBatch", P + "/search/batch", request,
                                 request.search_points, search_body,
                                 points_pb2.SearchBatchResponse())

    async def SearchGroups(self, request: points_pb2.SearchPointGroups,  # noqa: N802
                           context: Any) -> points_pb2.SearchGroupsResponse:
        return await self._groups(context, "SearchGroups", P + "/search/groups", request,
                                  search_body, points_pb2.SearchGroupsResponse())

    async def Recommend(self, request: points_pb2.RecommendPoints,  # noqa: N802
                        context: Any) -> points_pb2.RecommendResponse:
        return await self._scored(context, "Recommend", P + "/recommend", request,
                                  recommend_body, points_pb2.RecommendResponse())

    async def RecommendBatch(self, request: points_pb2.RecommendBatchPoints,  # noqa: N802
                             context: Any) -> points_pb2.RecommendBatchResponse:
        return await self._batch(context, "RecommendBatch", P + "/recommend/batch", request,
                                 request.recommend_points, recommend_body,
                                 points_pb2.RecommendBatchResponse())

    async def RecommendGroups(self, request: points_pb2.RecommendPointGroups,  # noqa: N802
                              context: Any) -> points_pb2.RecommendGroupsResponse:
        return await self._groups(context, "RecommendGroups", P + "/recommend/groups",
                                  request, recommend_body, points_pb2.RecommendGroupsResponse())

    async def Discover(self, request: points_pb2.DiscoverPoints,  # noqa: N802
                       context: Any) -> points_pb2.DiscoverResponse:
        return await self._scored(context, "Discover", P + "/discover", request,
                                  discover_body, points_pb2.DiscoverResponse())

    async def DiscoverBatch(self, request: points_pb2.DiscoverBatchPoints,  # noqa: N802
                            context: Any) -> points_pb2.DiscoverBatchResponse:
        return await self._batch(context, "DiscoverBatch", P + "/discover/batch", request,
                                 request.discover_points, discover_body,
                                 points_pb2.DiscoverBatchResponse())

    async def Query(self, request: points_pb2.QueryPoints,  # noqa: N802
                    context: Any) -> points_pb2.QueryResponse:
        return await self._scored(context, "Query", P + "/query", request, query_body,
                                  points_pb2.QueryResponse())

    async def QueryBatch(self, request: points_pb2.QueryBatchPoints,  # noqa: N802
                         context: Any) -> points_pb2.QueryBatchResponse:
        return await self._batch(context, "QueryBatch", P + "/query/batch", request,
                                 request.query_points, query_body,
                                 points_pb2.QueryBatchResponse())

    async def QueryGroups(self, request: points_pb2.QueryPointGroups,  # noqa: N802
                          context: Any) -> points_pb2.QueryGroupsResponse:
        return await self._groups(context, "QueryGroups", P + "/query/groups", request,
                                  query_body, points_pb2.QueryGroupsResponse())

    async def Facet(self, request: points_pb2.FacetCounts,  # noqa: N802
                    context: Any) -> points_pb2.FacetResponse:
        started = time.perf_counter()
        res = await self._call(context, "Facet", "POST", "/collections/{collection_name}/facet",
                               request, facet_body, _read_query(request))
        out = points_pb2.FacetResponse()
        _facet_hits(out.hits, res["hits"])
        out.time = time.perf_counter() - started
        return out

    async def SearchMatrixPairs(self, request: points_pb2.SearchMatrixPoints,  # noqa: N802
                                context: Any) -> points_pb2.SearchMatrixPairsResponse:
        started = time.perf_counter()
        res = await self._call(context, "SearchMatrixPairs", "POST",
                               P + "/search/matrix/pairs", request, matrix_body,
                               _read_query(request))
        out = points_pb2.SearchMatrixPairsResponse()
        for pr in res["pairs"]:
            mp = out.result.pairs.add()
            set_point_id(mp.a, pr["a"])
            set_point_id(mp.b, pr["b"])
            mp.score = pr["score"]
        out.result.SetInParent()
        out.time = time.perf_counter() - started
        return out

    async def SearchMatrixOffsets(self, request: points_pb2.SearchMatrixPoints,  # noqa: N802
                                  context: Any) -> points_pb2.SearchMatrixOffsetsResponse:
        started = time.perf_counter()
        res = await self._call(context, "SearchMatrixOffsets", "POST",
                               P + "/search/matrix/offsets", request, matrix_body,
                               _read_query(request))
        out = points_pb2.SearchMatrixOffsetsResponse()
        r = out.result
        r.offsets_row.extend(res["offsets_row"])
        r.offsets_col.extend(res["offsets_col"])
        r.scores.extend(res["scores"])
        for pid in res["ids"]:
            set_point_id(r.ids.add(), pid)
        r.SetInParent()
        out.time = time.perf_counter() - started
        return out
