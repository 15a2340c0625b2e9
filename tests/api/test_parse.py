"""Request parsing (api/parse): bodies and query parameters → typed requests and operations,
with Qdrant's messages for what is wrong."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from starlette.requests import Request

from api.parse import common, reads, vectors, writes
from engine.config import parse_create
from engine.errors import BadInput, BadRequest, EngineError
from engine.operations import (
    ClearPayload,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    SetPayload,
    UpdateVectors,
    Upsert,
)

SINGLE = parse_create({"vectors": {"size": 3, "distance": "Cosine"}})
NAMED = parse_create({"vectors": {"img": {"size": 2, "distance": "Dot"},
                                  "txt": {"size": 3, "distance": "Euclid"}}})


def _coll(cfg: Any = SINGLE) -> Any:
    return SimpleNamespace(config=cfg)  # the parsers only read the config


def _request(query: bytes = b"") -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "query_string": query,
                    "headers": []})


def _raises(exc: type[EngineError], message: str, fn: Any, *args: Any) -> None:
    with pytest.raises(exc) as info:
        fn(*args)
    assert info.value.detail == message


# ---- common -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "want"), [
    ({}, (True, False)),
    ({"with_payload": None, "with_vector": None}, (True, False)),
    ({"with_payload": False, "with_vector": True}, (False, True)),
    ({"with_vectors": ["a"]}, (True, ["a"])),
    ({"with_vector": False, "with_vectors": True}, (True, False)),  # with_vector wins
    ({"with_vector": None, "with_vectors": True}, (True, False)),  # even when null
    ({"with_payload": ["k"]}, (["k"], False)),
])
def test_selectors(body: dict, want: tuple) -> None:
    assert common.selectors(body, payload_default=True) == want
    wp, wv = want
    assert common.selectors(body, payload_default=False) == (
        False if body.get("with_payload") is None else wp, wv)


def test_payload_default_per_endpoint() -> None:
    assert reads.retrieve_request({"ids": [1]}).with_payload is True
    assert reads.scroll_request({}).with_payload is True
    assert reads.search_request(_coll(), {"vector": [1, 2, 3]}).with_payload is False
    q = reads.query_request(_coll(), {"query": [1, 2, 3]})
    assert q.with_payload is False and q.nearest is not None
    assert q.nearest.with_payload is False
    assert reads.query_request(_coll(), {}).with_payload is False
    for req in (reads.retrieve_request({"ids": [1]}), reads.scroll_request({}),
                reads.query_request(_coll(), {}), q):
        assert req.with_vector is False


def test_limit_and_offset() -> None:
    assert common.limit(None) == 10 and common.limit(None, 3) == 3 and common.limit(7) == 7
    for bad in (0, -1, True, 1.5, "5"):
        _raises(BadRequest, f"limit value {bad} is invalid. Must be 1 or larger.",
                common.limit, bad)
    assert common.offset(None) == 0 and common.offset(0) == 0 and common.offset(4) == 4
    for bad in (-1, False, 2.0, "1"):
        _raises(BadRequest, f"offset value {bad} is invalid. Must be 0 or larger.",
                common.offset, bad)


def test_threshold_and_params() -> None:
    assert common.score_threshold(None) is None
    assert common.score_threshold(1) == 1.0
    _raises(BadRequest, "`score_threshold` must be a number", common.score_threshold, True)
    _raises(BadRequest, "`score_threshold` must be a number", common.score_threshold, "0.5")
    assert common.search_params(None) == (None, False)
    assert common.search_params({"hnsw_ef": 0, "exact": True, "quantization": {}}) == (None, True)
    assert common.search_params({"hnsw_ef": 64}) == (64, False)
    _raises(BadRequest, "`params` must be an object", common.search_params, [1])
    _raises(BadRequest, "`params.hnsw_ef` must be a non-negative integer",
            common.search_params, {"hnsw_ef": -1})
    _raises(BadRequest, "`params.exact` must be a boolean", common.search_params,
            {"exact": "yes"})


def test_bool_flags() -> None:
    assert common.query_flag(_request(), "wait") is False
    assert common.query_flag(_request(), "wait", default=True) is True
    for v, want in ((b"true", True), (b"TRUE", True), (b"1", True), (b"yes", True),
                    (b"false", False), (b"no", False), (b"", False)):
        assert common.query_flag(_request(b"wait=" + v), "wait") is want
    assert common.query_flag(_request(b"wait=false"), "wait", True, strict=True) is False
    assert common.query_flag(_request(), "wait", True, strict=True) is True
    _raises(BadRequest, "Deserialize error in query parameters: invalid value '1' for wait",
            common.query_flag, _request(b"wait=1"), "wait", True, True)
    assert common.body_bool(None, "x") is None and common.body_bool(True, "x") is True
    _raises(BadRequest, "`x.y` must be a boolean", common.body_bool, 1, "x.y")


def test_path_point_id() -> None:
    assert common.path_point_id("42") == 42
    assert common.path_point_id("¹") == "¹"  # not ASCII: parse_id reports it as a bad UUID


# ---- reads ------------------------------------------------------------------------------------


def test_query_request_nearest() -> None:
    q = reads.query_request(_coll(), {"query": {"nearest": [1, 2, 3]}, "limit": 3, "offset": 1,
                                      "filter": {"must": [{"key": "k", "match": {"value": 1}}]},
                                      "params": {"exact": True}, "score_threshold": 0.5})
    spec = q.nearest
    assert spec is not None and spec.vector.dtype == np.float32
    assert (spec.limit, spec.offset, spec.exact, spec.score_threshold) == (3, 1, True, 0.5)
    assert spec.pred is not None and q.pred is spec.pred
    assert spec.filter_key == '{"must":[{"key":"k","match":{"value":1}}]}'
    assert (q.limit, q.offset) == (3, 1)


def test_query_request_without_query_is_a_scroll() -> None:
    q = reads.query_request(_coll(), {"limit": 2, "offset": 3, "with_payload": True,
                                      "params": "ignored without a query"})
    assert q.nearest is None and (q.limit, q.offset, q.with_payload) == (2, 3, True)
    s = q.as_scroll()
    assert (s.limit, s.offset, s.order_by, s.with_payload) == (5, None, None, True)


@pytest.mark.parametrize(("body", "exc", "message"), [
    ({"prefetch": [{"query": [1, 2, 3], "using": "img"}], "query": {"fusion": "rrf"}}, BadInput,
     "Not existing vector name error: img"),
    ({"lookup_from": {"vector": "x"}}, BadRequest, "`lookup_from` needs a `collection` name"),
    ({"query": {"fusion": "rrf"}}, BadRequest,
     "`fusion` query needs `prefetch`: it combines the prefetches' results"),
    ({"query": {"relevance_feedback": {"positive": [1]}}}, BadRequest,
     "query type `relevance_feedback` is not supported by Quiver yet"),
    ({"query": {"nearest": {"indices": [1], "values": [1.0]}}}, BadInput,
     "a sparse query vector needs `using`: the name of a sparse vector"),
    ({"query": [[1, 2, 3]]}, BadInput,
     "Vector '' is not a multivector: a multivector query (a list of vectors) does not apply"),
    ({"query": [1, "a", 3]}, BadInput,
     "Query vector must not contain NaN (null) or non-numeric values"),
    ({"query": []}, BadRequest, "query vector must be a non-empty list of numbers"),
    ({"query": [1, 2, 3], "using": "img"}, BadInput, "Not existing vector name error: img"),
    ({"query": [1, 2, 3], "limit": 0}, BadRequest, "limit value 0 is invalid. Must be 1 or larger."),
    ({"query": [1, 2, 3], "filter": [1]}, BadRequest, "filter must be an object"),
    ({"limit": -2}, BadRequest, "limit value -2 is invalid. Must be 1 or larger."),
    ({"offset": -2}, BadRequest, "offset value -2 is invalid. Must be 0 or larger."),
    # params are checked before the vector name, as Qdrant does
    ({"query": [1, 2, 3], "using": "img", "params": 1}, BadRequest, "`params` must be an object"),
])
def test_query_request_errors(body: dict, exc: type[EngineError], message: str) -> None:
    _raises(exc, message, reads.query_request, _coll(), body)


def test_search_request() -> None:
    spec = reads.search_request(_coll(NAMED), {"vector": {"name": "img", "vector": [1, 2]},
                                               "top": 4})
    assert (spec.using, spec.limit) == ("img", 4)
    _raises(BadInput, 'a sparse search vector needs a name: {"name": ..., "vector": '
            '{"indices": [...], "values": [...]}}', reads.search_request,
            _coll(), {"vector": {"name": "s", "indices": [1]}})
    _raises(BadRequest, "`searches` must be a list", reads.searches, {"searches": {}})


def test_scroll_request() -> None:
    s = reads.scroll_request({"offset": 5, "limit": 2, "with_vectors": True})
    assert (s.offset, s.limit, s.with_payload, s.with_vector) == (5, 2, True, True)
    s = reads.scroll_request({"order_by": {"key": "n", "direction": "desc", "start_from": 3}})
    assert s.order_by is not None and (s.order_by.key, s.order_by.descending,
                                       s.order_by.start_from) == ("n", True, 3.0)
    assert reads.scroll_request({"order_by": "n"}).order_by.key == "n"
    _raises(BadRequest, "Offset is not supported in conjunction with `order_by` scroll parameter",
            reads.scroll_request, {"order_by": "n", "offset": 1})
    _raises(BadRequest, "Unable to parse UUID: zzz", reads.scroll_request, {"offset": "zzz"})
    _raises(BadRequest, "`order_by.direction` must be asc or desc", reads.scroll_request,
            {"order_by": {"key": "n", "direction": "up"}})
    _raises(BadRequest, "invalid `start_from`: 'soon'", reads.scroll_request,
            {"order_by": {"key": "n", "start_from": "soon"}})


def test_count_and_retrieve_requests() -> None:
    assert reads.count_request({}).pred is None
    assert reads.count_request({"filter": {"must": []}}).pred is not None
    r = reads.retrieve_request({"ids": [1, "zzz", -1, "00000000-0000-0000-0000-000000000001"],
                                "with_vector": True})
    assert r.ids == [1, "00000000-0000-0000-0000-000000000001"]  # bad ids name no point
    assert (r.with_payload, r.with_vector) == (True, True)
    _raises(BadRequest, "`ids` must be a list", reads.retrieve_request, {"ids": 1})


# ---- writes -----------------------------------------------------------------------------------


def test_upsert_list_form_dedupes_last_wins() -> None:
    op = writes.upsert_op(SINGLE, {"points": [
        {"id": 1, "vector": [3, 0, 4], "payload": {"a": 1}},
        {"id": 2, "payload": {"b": 2}},
        {"id": 1, "vector": [0, 2, 0]}]})
    assert isinstance(op, Upsert) and op.ids == [2, 1] and op.payloads == [{"b": 2}, {}]
    rows = op.vectors[""]
    assert rows.positions.tolist() == [1]  # point 2 has no vector
    assert np.allclose(rows.values, [[0, 1, 0]])  # Cosine: normalised


def test_upsert_batch_form_named() -> None:
    op = writes.upsert_op(NAMED, {"batch": {"ids": [1, 2], "vectors": {"img": [[1, 2], [3, 4]]},
                                            "payloads": [{"x": 1}, None]}})
    assert op.ids == [1, 2] and op.payloads == [{"x": 1}, {}] and set(op.vectors) == {"img"}
    assert op.vectors["img"].values.tolist() == [[1, 2], [3, 4]]  # Dot: as given
    op = writes.upsert_op(NAMED, {"points": [{"id": 1, "vector": {"txt": [1, 2, 3]}},
                                             {"id": 2, "vector": {"img": [1, 1]}}]})
    assert op.vectors["txt"].positions.tolist() == [0]
    assert op.vectors["img"].positions.tolist() == [1]


def test_upsert_numpy_batch_in_process() -> None:
    x = np.array([[3, 4, 0], [0, 0, 2]], dtype=np.float32)
    op = writes.upsert_op(SINGLE, {"batch": {"ids": [7, 8], "vectors": x}})
    assert op.ids == [7, 8] and op.payloads == [{}, {}]
    assert np.allclose(op.vectors[""].values, [[0.6, 0.8, 0], [0, 0, 1]])
    _raises(BadRequest, "`batch.vectors` array must be (len(ids), dim), ids unique",
            writes.upsert_op, SINGLE, {"batch": {"ids": [7, 7], "vectors": x}})


@pytest.mark.parametrize(("cfg", "body", "exc", "message"), [
    (SINGLE, {"points": [{"id": 3, "vector": [1, 2]}]}, BadInput,
     "Vector dimension error: expected dim: 3, got 2"),
    (SINGLE, {"points": [{"id": 3, "vector": [1, None, 2]}]}, BadInput,
     "Vector contains NaN or infinite values"),
    (SINGLE, {"points": [{"id": 3, "vector": []}]}, BadInput,
     "Dense vector must not be empty for vector ''"),
    (SINGLE, {"points": [{"id": 3, "vector": [1, "a", 2]}]}, BadRequest,
     "vectors for '' must be lists of numbers"),
    (SINGLE, {"points": [{"id": 3, "vector": {"img": [1, 2, 3]}}]}, BadInput,
     "Not existing vector name error: img"),
    (SINGLE, {"points": [{"id": 3, "vector": {"indices": [1], "values": [1]}}]}, BadInput,
     'A sparse vector must be named: {"<sparse name>": {"indices": [...], "values": [...]}}'),
    (SINGLE, {"points": [{"id": 3, "vector": 5}]}, BadRequest,
     "point vector must be a list or an object of named vectors"),
    (NAMED, {"points": [{"id": 3, "vector": [1, 2]}]}, BadInput,
     "Unnamed vectors are not allowed when a collection has named vectors: ['img', 'txt']"),
    (SINGLE, {"points": [{"vector": [1, 2, 3]}]}, BadRequest, "each point needs an `id`"),
    (SINGLE, {"points": [{"id": -1, "vector": [1, 2, 3]}]}, BadRequest,
     "Invalid point id: -1 is not an unsigned 64-bit integer"),
    (SINGLE, {"points": {}}, BadRequest, "`points` must be a list"),
    (SINGLE, {"points": [1]}, BadRequest, "each point must be an object"),
    (SINGLE, {"points": [{"id": 1, "payload": 2}]}, BadRequest, "payload must be a JSON object"),
    (SINGLE, {"batch": {"ids": [5, 6], "vectors": [[1, 2, 3]]}}, BadRequest,
     "number of ids and vectors must be equal (2 != 1)"),
    (SINGLE, {"batch": {"ids": [5], "vectors": 1}}, BadRequest,
     "`batch.vectors` must be a list or an object"),
    (SINGLE, {"batch": {"ids": [5], "payloads": [{}, {}]}}, BadRequest,
     "`batch.payloads` must be a list as long as `ids`"),
    (SINGLE, {}, BadRequest, "request needs `points` or `batch`"),
    (SINGLE, [], BadRequest, "request body must be a JSON object"),
])
def test_upsert_errors(cfg: Any, body: Any, exc: type[EngineError], message: str) -> None:
    _raises(exc, message, writes.upsert_op, cfg, body)


def test_selection_by_ids_filter_or_selector() -> None:
    op = writes.delete_op(SINGLE, {"points": [1, 2]})
    assert isinstance(op, DeletePoints) and op.ids == [1, 2] and op.filter is None
    op = writes.delete_op(SINGLE, {"filter": {"must": []}})
    assert op.ids == [] and op.filter is not None
    op = writes.clear_payload_op(SINGLE, {"points": {"points": [3]}})  # a PointsSelector
    assert isinstance(op, ClearPayload) and op.ids == [3]
    _raises(BadRequest, "request needs `points` or `filter`", writes.delete_op, SINGLE, {})
    _raises(BadRequest, "filter must be an object", writes.delete_op, SINGLE, {"filter": 1})


def test_payload_ops() -> None:
    op = writes.set_payload_op(SINGLE, {"payload": {"a": 1}, "key": "x.y", "points": [1]})
    assert isinstance(op, SetPayload) and (op.payload, op.key, op.ids) == ({"a": 1}, "x.y", [1])
    op = writes.delete_payload_op(SINGLE, {"keys": ["a"], "points": [1]})
    assert isinstance(op, DeletePayload) and op.keys == ["a"]
    _raises(BadRequest, "`payload` must be an object", writes.overwrite_payload_op, SINGLE,
            {"payload": [1], "points": [1]})
    _raises(BadRequest, "`key` must be a string", writes.set_payload_op, SINGLE,
            {"payload": {}, "key": 1, "points": [1]})
    _raises(BadRequest, "`keys` must be a list of strings", writes.delete_payload_op, SINGLE,
            {"keys": "a", "points": [1]})
    # the body's own fields are checked before its selection
    _raises(BadRequest, "`payload` must be an object", writes.set_payload_op, SINGLE, {})


def test_vector_ops() -> None:
    op = writes.update_vectors_op(NAMED, {"points": [{"id": 1, "vector": {"img": [1, 2]}},
                                                     {"id": 1, "vector": {"img": [5, 6]}}]})
    assert isinstance(op, UpdateVectors) and op.ids == [1]
    assert op.vectors["img"].values.tolist() == [[5, 6]]
    _raises(BadRequest, "each point needs a `vector`", writes.update_vectors_op, NAMED,
            {"points": [{"id": 1}]})
    _raises(BadRequest, "`points` must be a list of {id, vector}", writes.update_vectors_op,
            NAMED, {})
    op = writes.delete_vectors_op(NAMED, {"vector": ["img"], "points": [2]})
    assert isinstance(op, DeleteVectors) and (op.names, op.ids) == (["img"], [2])
    _raises(BadInput, "Not existing vector name error: x", writes.delete_vectors_op, NAMED,
            {"vector": ["x"], "points": [2]})
    _raises(BadRequest, "`vector` must be a list of vector names", writes.delete_vectors_op,
            NAMED, {"vector": "img"})


def test_batch_ops() -> None:
    ops = writes.batch_ops({"operations": [{"delete": {"points": [1]}},
                                           {"clear_payload": {"points": [2]}},
                                           {"clear_payload": [3]}]})
    assert ops == [("delete", {"points": [1]}), ("clear_payload", {"points": [2]}),
                   ("clear_payload", [3])]
    ops = writes.batch_ops({"operations": [{"clear_payload": {"filter": {}}}]})
    assert ops == [("clear_payload", {"filter": {}})]
    _raises(BadRequest, "`operations` must be a list", writes.batch_ops, {})
    _raises(BadRequest, "invalid batch operation: {'nope': {}}", writes.batch_ops,
            {"operations": [{"delete": {"points": [1]}}, {"nope": {}}]})
    assert set(writes.WRITES) == {"upsert", "delete", "set_payload", "overwrite_payload",
                                  "delete_payload", "clear_payload", "update_vectors",
                                  "delete_vectors"}


_PLAIN_BODIES: list[tuple[Any, dict[str, Any]]] = [
    (SINGLE, {"query": [1, 2, 3]}),
    (SINGLE, {"query": [1.5, -2, 3e3], "limit": 4, "offset": 2, "score_threshold": 0.25,
              "with_payload": ["a"], "with_vectors": True}),
    (SINGLE, {"query": [1, 2, 3], "with_vector": False, "with_vectors": True}),
    (NAMED, {"query": [1, 2], "using": "img", "with_payload": {"exclude": ["x"]}}),
    (NAMED, {"query": [1, 2, 3], "using": "txt", "limit": 1, "score_threshold": 3}),
    # refusals: the same error, in _node's order
    (SINGLE, {"query": [1, 2, 3], "limit": 0}),
    (SINGLE, {"query": [1, 2, 3], "offset": -1, "limit": "x"}),
    (SINGLE, {"query": [1, 2, 3], "score_threshold": True}),
    (SINGLE, {"query": ["a", 2, 3], "limit": 0}),
    (SINGLE, {"query": [], "limit": 3}),
    (SINGLE, {"query": [[1, 2, 3]]}),
    (SINGLE, {"query": [None, 1, 2]}),
    (SINGLE, {"query": [1, 2, 3], "using": 7}),
    (NAMED, {"query": [1, 2]}),
    (NAMED, {"query": [1, 2], "using": "nope"}),
]


@pytest.mark.parametrize(("cfg", "body"), _PLAIN_BODIES)
def test_a_plain_query_parses_as_the_general_parser_does(cfg: Any, body: dict[str, Any]
                                                         ) -> None:
    """query_request's fast path for a vector-only body (reads._plain_query) gives _node's
    QueryRequest, or its error."""
    def outcome(fn: Any) -> Any:
        try:
            node = fn()
        except EngineError as exc:
            return type(exc), exc.detail
        spec = node.nearest
        return (node.pred, node.limit, node.offset, node.with_payload, node.with_vector,
                node.prefetch, node.score_threshold, node.filter_key, node.fusion, node.mmr,
                repr(spec.vector.tolist()), spec.vector.dtype, spec.using, spec.pred, spec.limit,
                spec.offset, spec.score_threshold, spec.with_payload, spec.with_vector,
                spec.exclude_ids, spec.filter_key, spec.hnsw_ef, spec.exact, spec.quantization)

    assert reads._PLAIN_KEYS.issuperset(body) and type(body["query"]) is list
    fast = outcome(lambda: reads.query_request(_coll(cfg), body))
    general = outcome(lambda: reads._node(_coll(cfg), body, None, 0, None, True))
    assert fast == general


@pytest.mark.parametrize("raw", [
    [0.1, -2.5, 3e-39, 1e-46],  # float32 subnormal and underflow to zero
    [1.0, 3.4028235e38, 3.4028236e38, -1e300],  # the largest float32, overflow to inf
    [1.0, 2, -7, 2**64],  # ints after a float
    [1.0, True, False],  # numpy's asarray reads these as 1.0 / 0.0 too
    [1.0, float("nan"), float("inf")],
    [1.0, None],  # refused by array(): numpy's path (NaN, refused later as such)
    [1.0, "2"],  # strings: not numbers
    [1.0, [2.0]],  # ragged
    [1.0, 10**400],  # beyond a double
    [2.0, 1e-7, 0.333333333333],
])
def test_a_flat_float_vector_converts_as_numpy_does(raw: list[Any]) -> None:
    """numeric_array's array('f') fast path gives numpy's float32 values, bit for bit, and
    leaves what it refuses to numpy's path."""
    import warnings as _warnings  # noqa: PLC0415

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # numpy warns on overflowing casts
        got = vectors.numeric_array(raw)
        try:
            arr = np.asarray(raw)
            want = None if arr.dtype.kind not in "iufO" else np.asarray(raw, dtype=np.float32) \
                if arr.dtype.kind == "O" else arr.astype(np.float32)
        except (ValueError, TypeError, OverflowError):
            want = None
    if want is None:
        assert got is None
        return
    assert got is not None and got.dtype == np.float32 and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
